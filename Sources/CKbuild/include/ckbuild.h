#ifndef CKBUILD_H
#define CKBUILD_H

#include <stddef.h>
#include <stdint.h>

/// Content-defined chunking (FastCDC with normalised chunking, gear hash).
/// Boundaries depend only on the bytes, so an edit moves at most the chunks around it.
typedef struct {
    size_t min_size;   ///< no cut before this many bytes
    size_t avg_size;   ///< a power of two: the expected chunk size
    size_t max_size;   ///< always cut here
} kb_cdc_params;

/// Returns the length of the first chunk of `data[0..<len]` (len if the data ends first).
size_t kb_cdc_cut(const uint8_t *data, size_t len, const kb_cdc_params *params);

/// syncfs(2): flush the filesystem holding `fd`. Swift's Glibc does not import it.
int kb_syncfs(int fd);
/// The filesystem type (statfs f_type) of an open file, -1 on error.
long kb_fs_type(int fd);

/// pipe2(O_CLOEXEC) (Swift's Glibc does not import pipe2): fds[0] reads, fds[1] writes.
int kb_pipe_cloexec(int fds[2]);

/// An unnamed file in directory `dir` (O_TMPFILE), read-write, for spooling.
int kb_open_tmpfile(const char *dir);

/// Drops at least the first `bytes` of a file in place: fallocate's
/// COLLAPSE_RANGE, rounded up to the filesystem's block size (so a line can
/// be cut at the new start); where that is the whole file, or the filesystem
/// cannot, the whole file is truncated. Returns the bytes dropped, or -1 with errno.
long long kb_drop_head(int fd, unsigned long long bytes);

/// Whether `n` bytes at `p` are all zero (a hole, when a file is restored sparse).
int kb_is_zero(const void *p, size_t n);

/// openat2(2) of `path` strictly beneath `dirfd`: no symlink in any component,
/// no `..` out of it. Falls back to openat(O_NOFOLLOW) on kernels without openat2.
int kb_open_beneath(int dirfd, const char *path, int flags);

/// SHA-256 with the x86 SHA extensions; two messages interleaved on one core.
/// Use only when kb_sha256_hw() returns 1.
typedef struct {
    uint32_t h[8];
    uint8_t block[64];
    size_t buffered;
    uint64_t total;
} kb_sha256;

/// A pseudo-terminal of `rows` x `cols` (master and slave, close-on-exec, no controlling terminal taken):
/// 0, or -1 with errno. The master is non-blocking.
int kb_openpty(int *master, int *slave, unsigned short rows, unsigned short cols);
/// A terminal's size: set it (on a pty's master), or read it (on the client's terminal): 0, or -1 with errno.
int kb_set_winsize(int fd, unsigned short rows, unsigned short cols);
int kb_get_winsize(int fd, unsigned short *rows, unsigned short *cols);
/// The terminal on `fd` in raw mode, its old settings in `saved` (a struct termios, at least 128 bytes); and back.
int kb_tty_raw(int fd, void *saved, int size);
int kb_tty_restore(int fd, const void *saved);

int kb_sha256_hw(void);
void kb_sha256_init(kb_sha256 *c);
void kb_sha256_update(kb_sha256 *c, const uint8_t *p, size_t len);
/// Updates two hashes at once (interleaved), e.g. a file's and its chunk's.
void kb_sha256_update2(kb_sha256 *a, const uint8_t *pa, size_t la, kb_sha256 *b, const uint8_t *pb, size_t lb);
void kb_sha256_final(kb_sha256 *c, uint8_t out[32]);

#endif
