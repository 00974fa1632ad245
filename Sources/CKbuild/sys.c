#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/openat2.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <unistd.h>
#include "ckbuild.h"

int kb_syncfs(int fd) { return syncfs(fd); }

long kb_fs_type(int fd) {
    struct statfs fs;
    return fstatfs(fd, &fs) == 0 ? (long)fs.f_type : -1;
}

int kb_open_beneath(int dirfd, const char *path, int flags) {
    struct open_how how = {
        .flags = (unsigned long long)(flags | O_CLOEXEC | O_NOFOLLOW),
        .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
    };
    long fd = syscall(SYS_openat2, dirfd, path, &how, sizeof how);
    if (fd < 0 && errno == ENOSYS) return openat(dirfd, path, flags | O_CLOEXEC | O_NOFOLLOW);
    return (int)fd;
}

int kb_pipe_cloexec(int fds[2]) {
    return pipe2(fds, O_CLOEXEC);
}

int kb_open_tmpfile(const char *dir) {
    return open(dir, O_RDWR | O_TMPFILE | O_CLOEXEC, 0600);
}

long long kb_drop_head(int fd, unsigned long long bytes) {
    struct stat st;
    if (fstat(fd, &st) < 0) return -1;
    unsigned long long block = st.st_blksize > 0 ? (unsigned long long)st.st_blksize : 4096;
    unsigned long long aligned = (bytes + block - 1) / block * block;  // at least what was asked
    if (bytes >= (unsigned long long)st.st_size || aligned == 0 ||
        fallocate(fd, FALLOC_FL_COLLAPSE_RANGE, 0, (off_t)aligned) < 0) {
        if (ftruncate(fd, 0) < 0) return -1;
        return (long long)st.st_size;
    }
    return (long long)aligned;
}

int kb_is_zero(const void *p, size_t n) {
    const unsigned char *b = p;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        unsigned long long w;
        memcpy(&w, b + i, 8);
        if (w) return 0;
    }
    for (; i < n; i++) if (b[i]) return 0;
    return 1;
}
