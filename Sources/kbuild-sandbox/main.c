// kbuild-sandbox: the helper that starts sandboxes and watches them.
//
// kbuild posix_spawns this small static program instead of cloning itself:
// a clone copies the caller's page tables, and a Swift server's are large
// (40 MB of memory cost ~3 ms per start, 200 MB ~14 ms). The helper is tiny
// and single-threaded. It outlives kbuild when asked to (app processes survive
// a restart of their node agent; it is the per-process monitor, like
// containerd's shim).
//
// A warm helper (`--ahead`) is started before it is needed, moved into a cgroup
// of its own while it waits, and runs one sandbox after another in that cgroup:
// PID 1 is forked inside it, so a start never moves a process between cgroups
// (on cgroup v1 a move takes a global lock and can wait out an RCU grace
// period: 10-20 ms here). It also makes the network namespace of a
// loopback-only sandbox before it waits (creating one is serialised in the
// kernel), and makes the next one after each sandbox.
//
// fd 3 is a SOCK_SEQPACKET socket to kbuild. For each sandbox the helper gets
// one message: the spec (SandboxWire in Sandbox.swift) with descriptors
// attached (SCM_RIGHTS), in this order:
//   report   gets one kb_sb_report: err 0 with PID 1's host PID once the command
//            runs, or the errno and the step that failed (the helper then exits)
//   status   gets one kb_sb_status when the command ends (nothing if it was
//            killed), then EOF: the sandbox is over
//   stdin, stdout, stderr    each if the spec's flags say so (else /dev/null)
//   netns    the network namespace to join, if the spec has one
//   upper    the kept upper dir's detached mount, if any
//   lowers   detached lower dirs, topmost first
//   mounts   detached bind mounts
// Once the sandbox is over and the helper is ready for the next one, it sends
// one byte ("r") back. EOF instead of a message: kbuild is done with it; it exits.
// Signals sent to the helper are forwarded to PID 1 and from there to the command.
// If the spec says the sandbox dies with its caller, EOF on fd 3 kills it.
// With LOG_LINES, the stdout descriptor is a log file: the command's stdout
// and stderr are pipes this helper reads, and each line goes to the file
// whole, as "<UTC time to the microsecond> <o|e> <text>" (app processes: the
// helper outlives kbuild, so the log keeps its lines and times meanwhile).

#define _GNU_SOURCE
#include "csandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <linux/falloc.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { FD_CONTROL = 3, MAX_FDS = 128 };
enum { DIE_WITH_CALLER = 1, HAS_STDIN = 2, HAS_STDOUT = 4, HAS_STDERR = 8, LOG_LINES = 16, TAKE_TERMINAL = 32 };

/// One message's strings live in one arena, freed when its sandbox is over.
typedef struct {
    char *base;
    size_t used, cap;
} arena;

typedef struct {
    const unsigned char *p, *end;
    int bad;
    arena *a;
} reader;

static void *take(arena *a, size_t n) {
    n = (n + 15) & ~(size_t)15;
    if (a->cap - a->used < n) return NULL;
    void *p = a->base + a->used;
    a->used += n;
    return p;
}

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
    char *s = take(r->a, (size_t)n + 1);
    if (!s) { r->bad = 1; return ""; }
    memcpy(s, r->p, n);
    s[n] = 0;
    r->p += n;
    return s;
}

static const char **strs(reader *r, uint32_t n) {
    if (n > 1u << 16) { r->bad = 1; n = 0; }
    const char **v = take(r->a, (n + 1) * sizeof *v);
    if (!v) { r->bad = 1; return NULL; }
    v[n] = NULL;
    for (uint32_t i = 0; i < n; i++) v[i] = str(r);
    return v;
}

static int report_fd = -1;

/// One output stream of a LOG_LINES sandbox: its pipe and the part of a line read so far.
typedef struct {
    int fd;
    char tag;
    size_t used;
    char buf[16384];
} linebuf;

/// The log file of a LOG_LINES sandbox: its size as this helper has seen it, and its cap.
static struct {
    uint64_t cap;   ///< bytes; 0: no cap
    uint64_t size;  ///< the file's size, kept as lines are written
} logfile;

static void log_line(int log, char tag, const char *text, size_t n);

/// Keeps the log under its cap: once past it, the oldest half is dropped in
/// place (fallocate COLLAPSE_RANGE, block-aligned, so a line can be cut at
/// the new start: readers skip what does not parse), or, where the
/// filesystem cannot, the whole file; then a `k` line says what went.
static void cap_log(int log) {
    if (!logfile.cap || logfile.size <= logfile.cap) return;
    struct stat st;
    if (fstat(log, &st) < 0) return;
    logfile.size = (uint64_t)st.st_size;
    if (logfile.size <= logfile.cap) return;
    uint64_t block = st.st_blksize > 0 ? (uint64_t)st.st_blksize : 4096;
    uint64_t drop = (logfile.size - logfile.cap / 2) / block * block;
    if (drop == 0 || fallocate(log, FALLOC_FL_COLLAPSE_RANGE, 0, (off_t)drop) < 0) {
        drop = logfile.size;
        if (ftruncate(log, 0) < 0) return;
    }
    logfile.size -= drop;
    char note[160];
    int n = snprintf(note, sizeof note, "kbuild: dropped the oldest %llu bytes of this process's output (its log is capped at %llu bytes)",
                     (unsigned long long)drop, (unsigned long long)logfile.cap);
    log_line(log, 'k', note, (size_t)n);
}

/// Writes one line to the log, prefixed with the time and the stream, in one write (O_APPEND: whole).
static void log_line(int log, char tag, const char *text, size_t n) {
    char line[16384 + 64];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    int head = snprintf(line, 64, "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ %c ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                        tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000, tag);
    if (n > sizeof line - (size_t)head - 1) n = sizeof line - (size_t)head - 1;
    memcpy(line + head, text, n);
    line[(size_t)head + n] = '\n';
    ssize_t wrote = write(log, line, (size_t)head + n + 1);
    if (wrote > 0) logfile.size += (uint64_t)wrote;
    if (tag != 'k') cap_log(log);
}

/// Reads what a stream has and logs each whole line; a line longer than the buffer is cut.
/// Returns 0 at EOF (the rest is logged), 1 otherwise.
static int pump(linebuf *b, int log) {
    ssize_t got = read(b->fd, b->buf + b->used, sizeof b->buf - b->used);
    if (got < 0 && (errno == EINTR || errno == EAGAIN)) return 1;
    if (got <= 0) {
        if (b->used) log_line(log, b->tag, b->buf, b->used);
        b->used = 0;
        close(b->fd);
        b->fd = -1;
        return 0;
    }
    b->used += (size_t)got;
    size_t start = 0;
    for (size_t i = 0; i < b->used; i++) {
        if (b->buf[i] != '\n') continue;
        log_line(log, b->tag, b->buf + start, i - start);
        start = i + 1;
    }
    if (start == 0 && b->used == sizeof b->buf) {
        log_line(log, b->tag, b->buf, b->used);
        start = b->used;
    }
    memmove(b->buf, b->buf + start, b->used - start);
    b->used -= start;
    return 1;
}

__attribute__((noreturn)) static void report_and_exit(int err, const char *what) {
    kb_sb_report r;
    memset(&r, 0, sizeof r);
    r.err = err ? err : EIO;
    snprintf(r.what, sizeof r.what, "%s", what);
    if (report_fd >= 0) {
        ssize_t unused = write(report_fd, &r, sizeof r);
        (void)unused;
    }
    _exit(125);
}

/// Runs the sandbox one message describes, to its end. Returns 1 if kbuild
/// went away during it (and the sandbox was to die with it).
/// Where the helper's own network namespace stands between sandboxes.
typedef struct {
    int host;     ///< the host's namespace, held open
    int in_host;  ///< 1 while the helper is in it
    int fresh;    ///< 1 while it is in an unused loopback-only namespace it made
} netstate;

static int run_one(unsigned char *buf, size_t len, int *fds, int nfds, int sfd, netstate *net) {
    report_fd = fds[0];
    int status_fd = fds[1];
    // Every string costs its bytes, a NUL, a pointer and alignment: 6x the wire size is enough.
    arena mem = {malloc(len * 6 + 65536), 0, len * 6 + 65536};
    if (!mem.base) report_and_exit(ENOMEM, "read the sandbox spec");
    reader r = {buf, buf + len, 0, &mem};
    if (len < 4 || memcmp(buf, "KBS3", 4) != 0) report_and_exit(EINVAL, "read the sandbox spec: not a kbuild sandbox spec");
    r.p += 4;
    kb_sb_spec s;
    memset(&s, 0, sizeof s);
    s.uid = u32(&r);
    s.gid = u32(&r);
    s.net = (int)u32(&r);
    uint32_t flags = u32(&r);
    s.upper_tmpfs_bytes = u64(&r);
    s.tmp_bytes = u64(&r);
    logfile.cap = u64(&r);
    uint32_t nlower = u32(&r), has_upper = u32(&r), has_netns = u32(&r), nmounts = u32(&r), ncgroups = u32(&r), nrlimits = u32(&r);
    s.cwd = str(&r);
    s.hostname = str(&r);
    s.upper_name = str(&r);
    s.uid_map = str(&r);
    s.gid_map = str(&r);
    s.argv = strs(&r, u32(&r));
    s.envp = strs(&r, u32(&r));
    if (nlower > 64 || nmounts > 32 || ncgroups > 16 || nrlimits > 16) r.bad = 1;
    const char *targets[32];
    int is_dir[32];
    for (uint32_t i = 0; !r.bad && i < nmounts; i++) {
        targets[i] = str(&r);
        is_dir[i] = (int)u32(&r);
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

    // The descriptors, in the order the spec's counts and flags give.
    int at = 2;
    int want = at + !!(flags & HAS_STDIN) + !!(flags & HAS_STDOUT) + !!(flags & HAS_STDERR) + !!has_netns + !!has_upper + (int)(nlower + nmounts);
    if (nfds != want) report_and_exit(EINVAL, "read the sandbox spec: wrong number of descriptors");
    int stdio[3] = {-1, -1, -1};
    if (flags & HAS_STDIN) stdio[0] = fds[at++];
    if (flags & HAS_STDOUT) stdio[1] = fds[at++];
    if (flags & HAS_STDERR) stdio[2] = fds[at++];
    s.netns_fd = has_netns ? fds[at++] : -1;
    s.upper_fd = has_upper ? fds[at++] : -1;
    s.lower_fds = &fds[at];
    s.nlower = (int)nlower;
    at += (int)nlower;
    kb_sb_mount mounts[32];
    for (uint32_t i = 0; i < nmounts; i++) {
        mounts[i].fd = fds[at++];
        mounts[i].target = targets[i];
        mounts[i].is_dir = is_dir[i];
    }
    s.mounts = mounts;
    s.nmounts = (int)nmounts;
    s.ncgroups = (int)ncgroups;
    s.rlimit_resources = resources;
    s.rlimit_values = values;
    s.nrlimits = (int)nrlimits;
    // LOG_LINES: the command writes into pipes of ours; we keep the log file.
    int log = -1;
    static linebuf out, errs;
    out.fd = errs.fd = -1;
    out.used = errs.used = 0;
    out.tag = 'o';
    errs.tag = 'e';
    if ((flags & LOG_LINES) && stdio[1] >= 0) {
        int po[2], pe[2];
        log = dup(stdio[1]);
        if (log < 0 || pipe2(po, O_CLOEXEC) < 0 || pipe2(pe, O_CLOEXEC) < 0) report_and_exit(errno, "make the log pipes");
        fcntl(log, F_SETFD, FD_CLOEXEC);
        struct stat st;
        logfile.size = fstat(log, &st) == 0 ? (uint64_t)st.st_size : 0;
        out.fd = po[0];
        errs.fd = pe[0];
        stdio[1] = po[1];
        stdio[2] = pe[1];
    }
    s.stdin_fd = stdio[0];
    s.take_terminal = (flags & TAKE_TERMINAL) && stdio[0] >= 0;
    s.stdout_fd = stdio[1];
    s.stderr_fd = stdio[2];
    if (sfd < 0) report_and_exit(errno, "signalfd");

    // Loopback only: PID 1 is born in a fresh namespace this helper made (ahead, or now).
    // Anything else starts from the host's namespace.
    char err[512];
    if (s.net == KB_SB_NET_NONE) {
        if (!net->fresh) {
            if (kb_sb_new_netns(err, sizeof err) < 0) report_and_exit(errno, err);
            net->in_host = 0;
        }
        s.net = KB_SB_NET_HOST;
    } else if (!net->in_host) {
        if (net->host < 0 || setns(net->host, CLONE_NEWNET) < 0) report_and_exit(errno, "go back to the host's network namespace");
        net->in_host = 1;
    }
    net->fresh = 0;

    // Signals that reached an idle helper (a terminal's ^C before this sandbox existed) are not this sandbox's.
    struct signalfd_siginfo stale;
    while (read(sfd, &stale, sizeof stale) == (ssize_t)sizeof stale) {}

    kb_sb_child child;
    if (kb_sb_spawn(&s, &child, err, sizeof err) < 0) report_and_exit(errno, err);

    // Only the command holds its stdio and mounts now: EOF on its pipes means it and its children are done.
    for (int i = 2; i < nfds; i++) close(fds[i]);
    if (log >= 0) {
        close(stdio[1]);
        close(stdio[2]);
    }
    kb_sb_report ok;
    memset(&ok, 0, sizeof ok);
    ok.pid = child.pid;
    ssize_t unused = write(report_fd, &ok, sizeof ok);
    (void)unused;
    close(report_fd);
    report_fd = -1;

    // Watch PID 1: forward signals to it, relay its report of the command's end,
    // and end the sandbox if its caller goes away and asked for that.
    int caller_gone = 0;
    struct pollfd p[4] = {{.fd = sfd, .events = POLLIN}, {.fd = (flags & DIE_WITH_CALLER) ? FD_CONTROL : -1, .events = POLLIN},
                          {.fd = out.fd, .events = POLLIN}, {.fd = errs.fd, .events = POLLIN}};
    for (;;) {
        p[2].fd = out.fd;
        p[3].fd = errs.fd;
        if (poll(p, 4, -1) < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (p[2].revents && out.fd >= 0) pump(&out, log);
        if (p[3].revents && errs.fd >= 0) pump(&errs, log);
        if (p[1].revents) {
            char c;
            if (recv(FD_CONTROL, &c, 1, MSG_DONTWAIT) <= 0) {
                kb_sb_signal(child.pidfd, SIGKILL);
                caller_gone = 1;
                p[1].fd = -1;
            }
        }
        if (!(p[0].revents & POLLIN)) continue;
        struct signalfd_siginfo si;
        if (read(sfd, &si, sizeof si) != (ssize_t)sizeof si) continue;
        if (si.ssi_signo != SIGCHLD) {
            kb_sb_signal(child.pidfd, (int)si.ssi_signo);
            continue;
        }
        siginfo_t info;
        memset(&info, 0, sizeof info);
        if (waitid(P_PID, (id_t)child.pid, &info, WEXITED | WNOHANG) == 0 && info.si_pid == child.pid) break;
    }
    // What is left in the pipes: everything in the namespace died with PID 1, so EOF comes.
    while (out.fd >= 0 || errs.fd >= 0) {
        struct pollfd q[2] = {{.fd = out.fd, .events = POLLIN}, {.fd = errs.fd, .events = POLLIN}};
        if (poll(q, 2, 2000) <= 0) break;
        if (q[0].revents && out.fd >= 0) pump(&out, log);
        if (q[1].revents && errs.fd >= 0) pump(&errs, log);
    }
    if (out.fd >= 0) close(out.fd);
    if (errs.fd >= 0) close(errs.fd);
    if (log >= 0) close(log);
    kb_sb_status st;
    ssize_t got = read(child.status_fd, &st, sizeof st);
    if (got == (ssize_t)sizeof st) {
        unused = write(status_fd, &st, sizeof st);
        (void)unused;
    }
    close(status_fd);
    close(child.status_fd);
    close(child.pidfd);
    close(child.lifeline_fd);
    free(mem.base);
    return caller_gone;
}

int main(int argc, char **argv) {
    // Signals arrive through a signalfd from here on (blocked before PID 1 exists, so none is lost).
    int sfd = kb_sb_signals_fd();
    if (sfd >= 0) fcntl(sfd, F_SETFL, O_NONBLOCK);
    netstate net = {open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC), 1, 0};
    int ahead = argc > 1 && strcmp(argv[1], "--ahead") == 0;
    char netns_err[256];
    if (ahead) {
        // A warm helper that cannot make what it is for is of no use: kbuild sees it exit.
        if (kb_sb_new_netns(netns_err, sizeof netns_err) < 0) return 125;
        net.in_host = 0;
        net.fresh = 1;
    }
    size_t cap = 1 << 20;
    unsigned char *buf = malloc(cap);
    if (!buf) return 125;
    for (;;) {
        union {
            char space[CMSG_SPACE(sizeof(int) * MAX_FDS)];
            struct cmsghdr align;
        } control;
        struct iovec iov = {.iov_base = buf, .iov_len = cap};
        struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.space, .msg_controllen = sizeof control.space};
        ssize_t len;
        do len = recvmsg(FD_CONTROL, &msg, MSG_CMSG_CLOEXEC); while (len < 0 && errno == EINTR);
        if (len <= 0) return 0;  // kbuild is done with us (or gone)
        int fds[MAX_FDS], nfds = 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
            if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
            int n = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            for (int i = 0; i < n && nfds < MAX_FDS; i++) memcpy(&fds[nfds++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        }
        if (nfds < 2) return 125;
        if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
            report_fd = fds[0];
            report_and_exit(E2BIG, "read the sandbox spec: too large");
        }
        if (run_one(buf, (size_t)len, fds, nfds, sfd, &net)) return 0;
        // Ready for the next one: a fresh network namespace first, if this helper makes them ahead.
        if (ahead) {
            if (kb_sb_new_netns(netns_err, sizeof netns_err) < 0) return 125;
            net.in_host = 0;
            net.fresh = 1;
        }
        if (send(FD_CONTROL, "r", 1, MSG_NOSIGNAL) < 0) return 0;
    }
}
