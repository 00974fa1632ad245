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
#include <stdlib.h>
#include <sys/ioctl.h>
#include <termios.h>
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

int kb_openpty(int *master, int *slave, unsigned short rows, unsigned short cols) {
    int m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (m < 0) return -1;
    char name[128];
    if (grantpt(m) < 0 || unlockpt(m) < 0 || ptsname_r(m, name, sizeof name) != 0) goto fail;
    int s = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (s < 0) goto fail;
    int fl = fcntl(m, F_GETFL);
    if (kb_set_winsize(m, rows, cols) < 0 || fl < 0 || fcntl(m, F_SETFL, fl | O_NONBLOCK) < 0) {
        int e = errno;
        close(s);
        errno = e;
        goto fail;
    }
    *master = m;
    *slave = s;
    return 0;
fail:;
    int e = errno;
    close(m);
    errno = e;
    return -1;
}

int kb_set_winsize(int fd, unsigned short rows, unsigned short cols) {
    struct winsize ws = {.ws_row = rows, .ws_col = cols};
    return ioctl(fd, TIOCSWINSZ, &ws);
}

int kb_get_winsize(int fd, unsigned short *rows, unsigned short *cols) {
    struct winsize ws;
    if (ioctl(fd, TIOCGWINSZ, &ws) < 0) return -1;
    *rows = ws.ws_row;
    *cols = ws.ws_col;
    return 0;
}

int kb_tty_raw(int fd, void *saved, int size) {
    if (size < (int)sizeof(struct termios)) { errno = EINVAL; return -1; }
    struct termios t;
    if (tcgetattr(fd, &t) < 0) return -1;
    memcpy(saved, &t, sizeof t);
    cfmakeraw(&t);
    return tcsetattr(fd, TCSAFLUSH, &t);
}

int kb_tty_restore(int fd, const void *saved) {
    struct termios t;
    memcpy(&t, saved, sizeof t);
    return tcsetattr(fd, TCSADRAIN, &t);
}
