// kbuild-sandbox: the helper that starts one sandbox and watches it.
//
// kbuild posix_spawns this small static program instead of cloning itself:
// a clone copies the caller's page tables, and a Swift server's are large
// (40 MB of memory cost ~3 ms per start, 200 MB ~14 ms). The helper is tiny,
// single-threaded and outlives kbuild when asked to (app processes survive a
// restart of their node agent; it is the per-process monitor, like
// containerd's shim).
//
// Descriptors on entry:
//   0 1 2   the command's stdin, stdout, stderr
//   3       the spec (read to EOF; the format is SandboxWire in Sandbox.swift)
//   4       report: one kb_sb_report, err 0 with PID 1's host PID once the command runs
//   5       status: one kb_sb_status when the command ends (nothing if it was killed)
//   6       the network namespace to join (if the spec says so)
//   7       the kept upper dir's detached mount (if any)
//   8...    detached lower dirs (topmost first), then detached bind mounts
// Signals sent to the helper are forwarded to PID 1 and from there to the command.

#define _GNU_SOURCE
#include "csandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

enum { FD_SPEC = 3, FD_REPORT = 4, FD_STATUS = 5, FD_NETNS = 6, FD_UPPER = 7, FD_LAYERS = 8 };

typedef struct {
    const unsigned char *p, *end;
    int bad;
} reader;

static uint32_t u32(reader *r) {
    if (r->end - r->p < 4) { r->bad = 1; return 0; }
    uint32_t v = (uint32_t)r->p[0] | (uint32_t)r->p[1] << 8 | (uint32_t)r->p[2] << 16 | (uint32_t)r->p[3] << 24;
    r->p += 4;
    return v;
}

static uint64_t u64(reader *r) {
    uint64_t lo = u32(r);
    return lo | (uint64_t)u32(r) << 32;
}

static const char *str(reader *r) {
    uint32_t n = u32(r);
    if (r->bad || (uint64_t)(r->end - r->p) < n) { r->bad = 1; return ""; }
    char *s = malloc(n + 1);
    if (!s) { r->bad = 1; return ""; }
    memcpy(s, r->p, n);
    s[n] = 0;
    r->p += n;
    return s;
}

static const char **strs(reader *r, uint32_t n) {
    if (n > 1u << 16) { r->bad = 1; n = 0; }
    const char **v = calloc(n + 1, sizeof *v);
    if (!v) { r->bad = 1; return NULL; }
    for (uint32_t i = 0; i < n; i++) v[i] = str(r);
    return v;
}

__attribute__((noreturn)) static void report_and_exit(int err, const char *what) {
    kb_sb_report r;
    memset(&r, 0, sizeof r);
    r.err = err ? err : EIO;
    snprintf(r.what, sizeof r.what, "%s", what);
    ssize_t unused = write(FD_REPORT, &r, sizeof r);
    (void)unused;
    _exit(125);
}

int main(void) {
    // Read the whole spec.
    size_t cap = 1 << 16, len = 0;
    unsigned char *buf = malloc(cap);
    for (;;) {
        if (!buf) report_and_exit(ENOMEM, "read the sandbox spec");
        ssize_t n = read(FD_SPEC, buf + len, cap - len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) report_and_exit(errno, "read the sandbox spec");
        if (n == 0) break;
        len += (size_t)n;
        if (len == cap) buf = realloc(buf, cap *= 2);
    }
    close(FD_SPEC);

    reader r = {buf, buf + len, 0};
    if (len < 4 || memcmp(buf, "KBS1", 4) != 0) report_and_exit(EINVAL, "read the sandbox spec: not a kbuild sandbox spec");
    r.p += 4;
    kb_sb_spec s;
    memset(&s, 0, sizeof s);
    s.uid = u32(&r);
    s.gid = u32(&r);
    s.net = (int)u32(&r);
    uint32_t flags = u32(&r);
    s.upper_tmpfs_bytes = u64(&r);
    s.tmp_bytes = u64(&r);
    uint32_t nlower = u32(&r), has_upper = u32(&r), has_netns = u32(&r), nmounts = u32(&r), ncgroups = u32(&r), nrlimits = u32(&r);
    s.cwd = str(&r);
    s.hostname = str(&r);
    s.upper_name = str(&r);
    s.uid_map = str(&r);
    s.gid_map = str(&r);
    s.argv = strs(&r, u32(&r));
    s.envp = strs(&r, u32(&r));
    if (nlower > 64 || nmounts > 32 || ncgroups > 16 || nrlimits > 16) r.bad = 1;
    kb_sb_mount mounts[32];
    for (uint32_t i = 0; !r.bad && i < nmounts; i++) {
        mounts[i].target = str(&r);
        mounts[i].is_dir = (int)u32(&r);
        mounts[i].fd = FD_LAYERS + (int)nlower + (int)i;
    }
    s.cgroup_procs = strs(&r, r.bad ? 0 : ncgroups);
    int resources[16];
    uint64_t values[32];
    for (uint32_t i = 0; !r.bad && i < nrlimits; i++) {
        resources[i] = (int)u32(&r);
        values[2 * i] = u64(&r);
        values[2 * i + 1] = u64(&r);
    }
    if (r.bad || r.p != r.end || !s.argv || !s.argv[0]) report_and_exit(EINVAL, "read the sandbox spec: malformed");

    int lowers[64];
    for (uint32_t i = 0; i < nlower; i++) lowers[i] = FD_LAYERS + (int)i;
    s.lower_fds = lowers;
    s.nlower = (int)nlower;
    s.upper_fd = has_upper ? FD_UPPER : -1;
    s.netns_fd = has_netns ? FD_NETNS : -1;
    s.mounts = mounts;
    s.nmounts = (int)nmounts;
    s.ncgroups = (int)ncgroups;
    s.rlimit_resources = resources;
    s.rlimit_values = values;
    s.nrlimits = (int)nrlimits;
    s.stdin_fd = 0;
    s.stdout_fd = 1;
    s.stderr_fd = 2;

    // Die with the thread that started us, unless the sandbox must outlive kbuild.
    if (flags & 1) prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    // Signals arrive through a signalfd from here on (blocked before PID 1 exists, so none is lost).
    int sfd = kb_sb_signals_fd();
    if (sfd < 0) report_and_exit(errno, "signalfd");

    kb_sb_child child;
    char err[512];
    if (kb_sb_spawn(&s, &child, err, sizeof err) < 0) report_and_exit(errno, err);

    // Only the command holds its stdio now: EOF on its pipes means it and its children are done.
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    for (int fd = 0; fd < 3; fd++) dup2(null, fd);
    for (uint32_t i = 0; i < nlower + nmounts; i++) close(FD_LAYERS + (int)i);
    if (has_upper) close(FD_UPPER);
    if (has_netns) close(FD_NETNS);

    kb_sb_report ok;
    memset(&ok, 0, sizeof ok);
    ok.pid = child.pid;
    ssize_t unused = write(FD_REPORT, &ok, sizeof ok);
    (void)unused;
    close(FD_REPORT);

    // Watch PID 1: forward signals to it, relay its report of the command's end.
    for (;;) {
        struct signalfd_siginfo si;
        ssize_t n = read(sfd, &si, sizeof si);
        if (n != (ssize_t)sizeof si) {
            if (n < 0 && errno == EINTR) continue;
            break;
        }
        if (si.ssi_signo != SIGCHLD) {
            kb_sb_signal(child.pidfd, (int)si.ssi_signo);
            continue;
        }
        siginfo_t info;
        memset(&info, 0, sizeof info);
        if (waitid(P_PID, (id_t)child.pid, &info, WEXITED | WNOHANG) == 0 && info.si_pid == child.pid) break;
    }
    kb_sb_status st;
    ssize_t got = read(child.status_fd, &st, sizeof st);
    if (got == (ssize_t)sizeof st) {
        unused = write(FD_STATUS, &st, sizeof st);
        (void)unused;
    }
    return 0;
}
