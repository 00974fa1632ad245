// The fork-to-exec half of kbuild's sandbox (see csandbox.h).
//
// kb_sb_spawn runs in the kbuild-sandbox helper, a single-threaded process; it
// clones one child into new user, mount, PID, UTS and IPC namespaces. The
// child still keeps to system calls between clone and execve (no malloc, no
// stdio, no strerror, ids changed by raw syscalls rather than glibc's
// all-threads setxid), so that the code stays safe if it is ever called from a
// threaded process; errors travel to the parent as an errno and a short text,
// and the parent formats them. The rest of this file (kb_sb_detach and the
// small wrappers) is called by kbuild itself.
//
// Child, step by step:
//   wait for the parent to write the id maps and join the cgroups
//   become root inside; make every mount private; hostname; loopback up
//   overlay root from the detached lower dirs and a tmpfs (or kept) upper
//   /proc (with /proc/sys read-only), a minimal /dev, /tmp, the caller's mounts
//   pivot_root; stay as PID 1: fork the command, forward signals, reap, report
// Command: new session, stdio, rlimits, ids, capabilities, no_new_privs,
// seccomp, every other descriptor closed on exec, execve.

#define _GNU_SOURCE
#include "csandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <dlfcn.h>
#include <grp.h>
#include <spawn.h>
#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/openat2.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
#ifndef P_PIDFD
#define P_PIDFD 3
#endif

struct kb_clone_args {
    uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid, set_tid_size, cgroup;
};


// ---------------------------------------------------------------------------
// Allocation-free text, for the child.

typedef struct {
    char *buf;
    size_t cap, len;
} text;

static void t_add(text *t, const char *s) {
    while (s && *s && t->len + 1 < t->cap) t->buf[t->len++] = *s++;
    t->buf[t->len] = 0;
}

static void t_num(text *t, uint64_t v) {
    char digits[24];
    int n = 0;
    do { digits[n++] = (char)('0' + v % 10); v /= 10; } while (v);
    while (n && t->len + 1 < t->cap) t->buf[t->len++] = digits[--n];
    t->buf[t->len] = 0;
}

/// Reports a failed step to the parent and exits. `what` and `object` name it.
__attribute__((noreturn)) static void die(int fd, const char *what, const char *object, int err) {
    kb_sb_report r;
    memset(&r, 0, sizeof r);
    r.err = err;
    text t = {r.what, sizeof r.what, 0};
    t_add(&t, what);
    if (object) { t_add(&t, " "); t_add(&t, object); }
    ssize_t unused = write(fd, &r, sizeof r);
    (void)unused;
    _exit(125);
}

static int write_all(int fd, const void *p, size_t n) {
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0) { if (errno == EINTR) continue; return -1; }
        c += w; n -= (size_t)w;
    }
    return 0;
}

static int write_file(const char *path, const char *data) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = write_all(fd, data, strlen(data));
    int e = errno;
    close(fd);
    errno = e;
    return rc;
}

// ---------------------------------------------------------------------------
// Mounts, by file descriptor: every target inside the new root is resolved
// beneath it with no symlinks, so nothing in a stack or an upper dir can
// redirect a mount to the host.

static int fs_new(int report, const char *fstype, const char *const *opts, unsigned attrs) {
    int fs = fsopen(fstype, FSOPEN_CLOEXEC);
    if (fs < 0) die(report, "fsopen", fstype, errno);
    for (int i = 0; opts && opts[i]; i += 2) {
        int rc = opts[i + 1] ? fsconfig(fs, FSCONFIG_SET_STRING, opts[i], opts[i + 1], 0)
                             : fsconfig(fs, FSCONFIG_SET_FLAG, opts[i], NULL, 0);
        if (rc < 0) die(report, fstype, opts[i], errno);
    }
    if (fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0) die(report, "mount", fstype, errno);
    int m = fsmount(fs, FSMOUNT_CLOEXEC, attrs);
    if (m < 0) die(report, "fsmount", fstype, errno);
    close(fs);
    return m;
}

/// Opens `path` (absolute, inside the root) as an O_PATH fd, making what is missing.
static int path_in_root(int report, int rootfd, const char *path, int is_dir) {
    char comp[256];
    int cur = fcntl(rootfd, F_DUPFD_CLOEXEC, 3);
    if (cur < 0) die(report, "dup root for", path, errno);
    const char *p = path;
    while (*p) {
        while (*p == '/') p++;
        if (!*p) break;
        size_t n = 0;
        while (p[n] && p[n] != '/') n++;
        if (n >= sizeof comp) die(report, "mount target has a long component:", path, ENAMETOOLONG);
        memcpy(comp, p, n);
        comp[n] = 0;
        p += n;
        while (*p == '/') p++;
        int last = *p == 0;
        if ((n == 1 && comp[0] == '.') || (n == 2 && comp[0] == '.' && comp[1] == '.'))
            die(report, "mount target has a . or .. component:", path, EINVAL);
        struct open_how how = {.flags = O_PATH | O_CLOEXEC | O_NOFOLLOW,
                               .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS};
        int next = (int)syscall(SYS_openat2, cur, comp, &how, sizeof how);
        if (next < 0 && errno == ENOENT) {
            if (!last || is_dir) {
                if (mkdirat(cur, comp, 0755) < 0 && errno != EEXIST) die(report, "mkdir mount target", path, errno);
            } else {
                int f = openat(cur, comp, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0644);
                if (f < 0 && errno != EEXIST) die(report, "create mount target", path, errno);
                if (f >= 0) close(f);
            }
            next = (int)syscall(SYS_openat2, cur, comp, &how, sizeof how);
        }
        if (next < 0) die(report, errno == ELOOP ? "mount target has a symlink in it:" : "open mount target", path, errno);
        struct stat st;
        if (fstat(next, &st) < 0) die(report, "stat mount target", path, errno);
        if (S_ISLNK(st.st_mode)) die(report, "mount target is a symlink:", path, ELOOP);
        if ((!last || is_dir) && !S_ISDIR(st.st_mode)) die(report, "mount target is not a directory:", path, ENOTDIR);
        close(cur);
        cur = next;
    }
    return cur;
}

static void attach(int report, int mnt, int rootfd, const char *target, int is_dir) {
    int at = path_in_root(report, rootfd, target, is_dir);
    if (move_mount(mnt, "", at, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
        die(report, "mount on", target, errno);
    close(at);
    close(mnt);
}

/// Binds `path` (inside the root) over itself with `attrs` (read-only and the like).
static void rebind(int report, int rootfd, const char *path, unsigned attrs) {
    int m = open_tree(rootfd, path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
    if (m < 0) {
        if (errno == ENOENT) return;
        die(report, "bind", path, errno);
    }
    struct mount_attr a = {.attr_set = attrs};
    if (mount_setattr(m, "", AT_EMPTY_PATH, &a, sizeof a) < 0) die(report, "make read-only", path, errno);
    if (move_mount(m, "", rootfd, path, MOVE_MOUNT_F_EMPTY_PATH) < 0) die(report, "mount on", path, errno);
    close(m);
}

static const char *const dev_nodes[] = {"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty", NULL};
#define N_DEV_NODES 6

/// Clones of the host's device nodes, taken before anything covers the host's /dev.
static void clone_dev_nodes(int report, int *out) {
    for (int i = 0; dev_nodes[i]; i++) {
        out[i] = open_tree(AT_FDCWD, dev_nodes[i], OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
        if (out[i] < 0) die(report, "bind", dev_nodes[i], errno);
    }
}

static void make_dev(int report, int rootfd, const int *nodes, uint64_t shm_bytes) {
    static const char *const devopts[] = {"mode", "0755", "size", "65536", NULL};
    attach(report, fs_new(report, "tmpfs", devopts, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC), rootfd, "/dev", 1);
    for (int i = 0; dev_nodes[i]; i++) attach(report, nodes[i], rootfd, dev_nodes[i], 0);
    int dev = path_in_root(report, rootfd, "/dev", 1);
    int devdir = openat(dev, ".", O_DIRECTORY | O_CLOEXEC);
    if (devdir < 0) die(report, "open", "/dev", errno);
    static const char *const links[] = {"fd", "/proc/self/fd", "stdin", "/proc/self/fd/0", "stdout", "/proc/self/fd/1",
                                        "stderr", "/proc/self/fd/2", "ptmx", "pts/ptmx", NULL};
    for (int i = 0; links[i]; i += 2)
        if (symlinkat(links[i + 1], devdir, links[i]) < 0) die(report, "symlink /dev/", links[i], errno);
    close(devdir);
    close(dev);
    static const char *const ptsopts[] = {"newinstance", NULL, "ptmxmode", "0666", "mode", "0620", NULL};
    attach(report, fs_new(report, "devpts", ptsopts, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC), rootfd, "/dev/pts", 1);
    char size[24];
    text s = {size, sizeof size, 0};
    t_num(&s, shm_bytes);
    const char *const shmopts[] = {"mode", "1777", "size", size, NULL};
    attach(report, fs_new(report, "tmpfs", shmopts, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV), rootfd, "/dev/shm", 1);
}

/// Like die, with the kernel's own words from the fs context's log when it left some.
__attribute__((noreturn)) static void die_explained(int report, int fs, const char *what, const char *object, int err) {
    char why[300], msg[440];
    text w = {msg, sizeof msg, 0};
    t_add(&w, what);
    t_add(&w, " ");
    t_add(&w, object);
    ssize_t n = read(fs, why, sizeof why - 1);
    if (n > 0) {
        why[n] = 0;
        if (why[n - 1] == '\n') why[n - 1] = 0;
        t_add(&w, " (kernel: ");
        t_add(&w, why + (n > 2 && why[1] == ' ' ? 2 : 0));
        t_add(&w, ")");
    }
    die(report, msg, NULL, err);
}

/// Builds the root. A tmpfs scratch mount, attached over /dev in the child's
/// own namespace (a path every host has and anyone may look up; the host's /dev
/// nodes were cloned before), holds the lower dirs (moved in from the caller's
/// detached, idmapped mounts: overlayfs takes layers only from the mounter's own
/// namespace), the upper and work dirs, and the overlay itself at scratch/root.
/// Everything after the attach goes by file descriptor, never by host path.
/// Returns an O_PATH fd of the root.
static int make_root(int report, const kb_sb_spec *s) {
    char size[24];
    text t = {size, sizeof size, 0};
    t_num(&t, s->upper_fd >= 0 ? 1 << 20 : s->upper_tmpfs_bytes);
    const char *const opts[] = {"mode", "0755", "size", size, NULL};
    int scratch = fs_new(report, "tmpfs", opts, MOUNT_ATTR_NODEV | MOUNT_ATTR_NOSUID);
    if (move_mount(scratch, "", AT_FDCWD, "/dev", MOVE_MOUNT_F_EMPTY_PATH) < 0)
        die(report, "attach", "a scratch tmpfs", errno);

    int fs = fsopen("overlay", FSOPEN_CLOEXEC);
    if (fs < 0) die(report, "fsopen", "overlay", errno);
    for (int i = 0; i < s->nlower; i++) {
        char name[16];
        text n = {name, sizeof name, 0};
        t_add(&n, "l");
        t_num(&n, (uint64_t)i);
        if (mkdirat(scratch, name, 0755) < 0) die(report, "mkdir", "a lower dir's mountpoint", errno);
        if (move_mount(s->lower_fds[i], "", scratch, name, MOVE_MOUNT_F_EMPTY_PATH) < 0)
            die(report, "attach", "a lower dir", errno);
        close(s->lower_fds[i]);
        int l = openat(scratch, name, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (l < 0) die(report, "open", "a lower dir", errno);
        if (fsconfig(fs, FSCONFIG_SET_FD, "lowerdir+", NULL, l) < 0) die(report, "overlay refused", "a lower dir", errno);
        close(l);
    }
    int upper, work;
    if (s->upper_fd >= 0) {
        if (mkdirat(scratch, "u", 0755) < 0) die(report, "mkdir", "the upper dir's mountpoint", errno);
        if (move_mount(s->upper_fd, "", scratch, "u", MOVE_MOUNT_F_EMPTY_PATH) < 0) die(report, "attach the upper dir", s->upper_name, errno);
        close(s->upper_fd);
        upper = openat(scratch, "u/upper", O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (upper < 0) die(report, "open upper/ in", s->upper_name, errno);
        work = openat(scratch, "u/work", O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (work < 0) die(report, "open work/ in", s->upper_name, errno);
    } else {
        if (mkdirat(scratch, "upper", 0755) < 0 || mkdirat(scratch, "work", 0700) < 0)
            die(report, "mkdir in", "the tmpfs upper dir", errno);
        upper = openat(scratch, "upper", O_PATH | O_DIRECTORY | O_CLOEXEC);
        work = openat(scratch, "work", O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (upper < 0 || work < 0) die(report, "open", "the tmpfs upper dir", errno);
    }
    const char *upper_name = s->upper_fd >= 0 ? s->upper_name : "the tmpfs upper dir";
    if (fsconfig(fs, FSCONFIG_SET_FD, "upperdir", NULL, upper) < 0) die_explained(report, fs, "overlay refused the upper dir", upper_name, errno);
    if (fsconfig(fs, FSCONFIG_SET_FD, "workdir", NULL, work) < 0) die_explained(report, fs, "overlay refused the work dir", upper_name, errno);
    // In a user namespace overlayfs keeps its metadata in user.* xattrs.
    if (fsconfig(fs, FSCONFIG_SET_FLAG, "userxattr", NULL, 0) < 0) die(report, "overlay", "userxattr", errno);
    if (fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0) die_explained(report, fs, "overlay mount over upper dir", upper_name, errno);
    int root = fsmount(fs, FSMOUNT_CLOEXEC, MOUNT_ATTR_NODEV | MOUNT_ATTR_NOSUID);
    if (root < 0) die(report, "fsmount", "overlay", errno);
    close(fs);
    close(upper);
    close(work);
    if (mkdirat(scratch, "root", 0755) < 0) die(report, "mkdir", "the root's mountpoint", errno);
    if (move_mount(root, "", scratch, "root", MOVE_MOUNT_F_EMPTY_PATH) < 0) die(report, "attach", "the root", errno);
    close(root);
    int rootfd = openat(scratch, "root", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (rootfd < 0) die(report, "open", "the root", errno);
    close(scratch);
    return rootfd;
}

// ---------------------------------------------------------------------------
// The command's process: ids, capabilities, seccomp, exec.

/// The capabilities a root process keeps (Docker's default set).
static const uint64_t kept_caps =
    (1ULL << CAP_CHOWN) | (1ULL << CAP_DAC_OVERRIDE) | (1ULL << CAP_FOWNER) | (1ULL << CAP_FSETID) |
    (1ULL << CAP_KILL) | (1ULL << CAP_SETGID) | (1ULL << CAP_SETUID) | (1ULL << CAP_SETPCAP) |
    (1ULL << CAP_NET_BIND_SERVICE) | (1ULL << CAP_NET_RAW) | (1ULL << CAP_SYS_CHROOT) | (1ULL << CAP_MKNOD) |
    (1ULL << CAP_AUDIT_WRITE) | (1ULL << CAP_SETFCAP);

/// Drops every capability but the kept ones from the bounding set (needs CAP_SETPCAP: before setresuid).
static void drop_bounding_caps(int report) {
    for (int cap = 0; cap < 64; cap++) {
        if (kept_caps & (1ULL << cap)) continue;
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL) die(report, "drop capability", NULL, errno);
    }
}

/// Root keeps the kept set; setresuid to any other id has already cleared them all.
static void set_caps(int report, uint32_t uid) {
    if (uid != 0) return;
    struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct d[2];
    memset(d, 0, sizeof d);
    d[0].effective = d[0].permitted = d[0].inheritable = (uint32_t)kept_caps;
    d[1].effective = d[1].permitted = d[1].inheritable = (uint32_t)(kept_caps >> 32);
    if (syscall(SYS_capset, &h, d) < 0) die(report, "set capabilities", NULL, errno);
}

#define DENY(nr) BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 1), BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM)

/// Refuses the system calls that reach kernel state shared with the host (keyrings,
/// BPF, perf, io_uring, modules) and new user namespaces; clone3 answers ENOSYS
/// so that libc falls back to clone, whose flags the filter can read.
#if defined(__x86_64__)
#define KB_AUDIT_ARCH AUDIT_ARCH_X86_64
#define KB_X32_BIT 0x40000000
#elif defined(__aarch64__)
#define KB_AUDIT_ARCH AUDIT_ARCH_AARCH64
#define KB_X32_BIT 0xffffffff  // no second ABI to refuse
#else
#error "the sandbox's seccomp filter knows x86_64 and aarch64 only"
#endif

static void install_seccomp(int report) {
    struct sock_filter prog[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, KB_AUDIT_ARCH, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, KB_X32_BIT, 0, 1),  // x86's x32 ABI
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
        DENY(SYS_keyctl), DENY(SYS_add_key), DENY(SYS_request_key), DENY(SYS_bpf), DENY(SYS_perf_event_open),
        DENY(SYS_userfaultfd), DENY(SYS_io_uring_setup), DENY(SYS_io_uring_enter), DENY(SYS_io_uring_register),
        DENY(SYS_kexec_load), DENY(SYS_kexec_file_load), DENY(SYS_init_module), DENY(SYS_finit_module),
        DENY(SYS_delete_module), DENY(SYS_open_by_handle_at), DENY(SYS_name_to_handle_at), DENY(SYS_acct),
        DENY(SYS_swapon), DENY(SYS_swapoff), DENY(SYS_quotactl), DENY(SYS_lookup_dcookie),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_clone3, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_unshare, 1, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_clone, 0, 3),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])),
        BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, CLONE_NEWUSER, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog fprog = {.len = (unsigned short)(sizeof prog / sizeof prog[0]), .filter = prog};
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &fprog) < 0) die(report, "install seccomp filter", NULL, errno);
}

static const char *env_get(const char *const *envp, const char *name) {
    size_t n = strlen(name);
    for (int i = 0; envp && envp[i]; i++)
        if (strncmp(envp[i], name, n) == 0 && envp[i][n] == '=') return envp[i] + n + 1;
    return NULL;
}

__attribute__((noreturn)) static void exec_command(int report, const kb_sb_spec *s) {
    const char *file = s->argv[0];
    char *const *argv = (char *const *)s->argv;
    char *const *envp = (char *const *)s->envp;
    if (strchr(file, '/')) {
        execve(file, argv, envp);
        die(report, "exec", file, errno);
    }
    const char *path = env_get(s->envp, "PATH");
    if (!path) path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    int seen_eacces = 0, other = 0;
    char buf[4096], found[4096] = "";
    while (*path) {
        size_t n = 0;
        while (path[n] && path[n] != ':') n++;
        text t = {buf, sizeof buf, 0};
        if (n == 0) t_add(&t, ".");
        else { memcpy(buf, path, n < sizeof buf - 1 ? n : sizeof buf - 1); t.len = n < sizeof buf - 1 ? n : sizeof buf - 1; buf[t.len] = 0; }
        t_add(&t, "/");
        t_add(&t, file);
        execve(buf, argv, envp);
        if (errno == EACCES) seen_eacces = 1;
        else if (errno != ENOENT && errno != ENOTDIR && !other) {
            // Found, but it would not run (ENOEXEC, E2BIG, …): that is the answer, as execvp gives it.
            other = errno;
            memcpy(found, buf, sizeof found);
        }
        path += n;
        if (*path == ':') path++;
    }
    if (other) die(report, "exec", found, other);
    die(report, seen_eacces ? "exec (permission denied on PATH)" : "command not found in the sandbox's PATH:", file,
        seen_eacces ? EACCES : ENOENT);
}

__attribute__((noreturn)) static void command_main(int report, const kb_sb_spec *s) {
    if (setsid() < 0) die(report, "setsid", NULL, errno);
    // Out of the way first, then into place: the caller's fds may be 0, 1 or 2 in any order.
    int fds[3] = {s->stdin_fd, s->stdout_fd, s->stderr_fd};
    for (int i = 0; i < 3; i++) {
        fds[i] = fds[i] >= 0 ? fcntl(fds[i], F_DUPFD_CLOEXEC, 10) : open("/dev/null", (i ? O_WRONLY : O_RDONLY) | O_CLOEXEC);
        if (fds[i] < 0) die(report, "set up stdio", NULL, errno);
    }
    for (int i = 0; i < 3; i++)
        if (dup2(fds[i], i) < 0) die(report, "set up stdio", NULL, errno);
    // A terminal made for this command (kbuild run with a TTY) becomes the new session's controlling terminal, so
    // ^C and ^Z reach its foreground job as on any terminal. Only when asked: a caller's own terminal passed
    // through must never become the sandbox's (TIOCSTI could then type into the caller's shell).
    if (s->take_terminal && isatty(0) && ioctl(0, TIOCSCTTY, 0) < 0) die(report, "take the terminal", NULL, errno);
    for (int i = 0; i < s->nrlimits; i++) {
        struct rlimit rl = {.rlim_cur = s->rlimit_values[2 * i], .rlim_max = s->rlimit_values[2 * i + 1]};
        if (setrlimit(s->rlimit_resources[i], &rl) < 0) die(report, "setrlimit", NULL, errno);
    }
    if (syscall(SYS_setgroups, 0, NULL) < 0) die(report, "setgroups", NULL, errno);
    if (syscall(SYS_setresgid, s->gid, s->gid, s->gid) < 0) die(report, "setresgid", NULL, errno);
    drop_bounding_caps(report);
    if (s->uid != 0 && syscall(SYS_setresuid, s->uid, s->uid, s->uid) < 0) die(report, "setresuid", NULL, errno);
    set_caps(report, s->uid);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) die(report, "set no_new_privs", NULL, errno);
    if (chdir(s->cwd) < 0) die(report, "chdir to", s->cwd, errno);
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < 65; sig++) sigaction(sig, &dfl, NULL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    syscall(SYS_close_range, 3, ~0U, CLOSE_RANGE_CLOEXEC);
    install_seccomp(report);
    exec_command(report, s);
}

// ---------------------------------------------------------------------------
// PID 1 of the sandbox.

/// Blocks every signal and returns a signalfd for them (PID 1 and the helper forward what they get).
int kb_sb_signals_fd(void) {
    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, NULL);
    return signalfd(-1, &all, SFD_CLOEXEC);
}

/// PID 1's loop: forwards signals to the command, reaps, reports the command's
/// end; and ends the sandbox if the process that made it dies (EOF on `lifeline`).
__attribute__((noreturn)) static void init_loop(pid_t main_pid, int sfd, int status_fd, int lifeline) {
    struct pollfd p[2] = {{.fd = sfd, .events = POLLIN}, {.fd = lifeline, .events = POLLIN}};
    for (;;) {
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR) continue;
            _exit(126);
        }
        if (p[1].revents) _exit(137);  // our maker is gone: the whole namespace goes with us
        if (!(p[0].revents & POLLIN)) continue;
        struct signalfd_siginfo si;
        ssize_t n = read(sfd, &si, sizeof si);
        if (n != (ssize_t)sizeof si) {
            if (n < 0 && errno == EINTR) continue;
            _exit(126);
        }
        if (si.ssi_signo != SIGCHLD) {
            kill(main_pid, (int)si.ssi_signo);
            continue;
        }
        int st;
        pid_t pid;
        while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
            if (pid != main_pid) continue;
            kb_sb_status out = {WIFSIGNALED(st) ? 2 : 1, WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st)};
            write_all(status_fd, &out, sizeof out);
            _exit(0);
        }
    }
}

/// Closes every descriptor but those in keep (the child inherited all of the parent's).
static void close_others(int *keep, int n) {
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && keep[j - 1] > keep[j]; j--) { int t = keep[j]; keep[j] = keep[j - 1]; keep[j - 1] = t; }
    unsigned next = 0;
    for (int i = 0; i < n; i++) {
        if (keep[i] < 0) continue;
        if ((unsigned)keep[i] > next) syscall(SYS_close_range, next, (unsigned)keep[i] - 1, 0);
        next = (unsigned)keep[i] + 1;
    }
    syscall(SYS_close_range, next, ~0U, 0);
}

__attribute__((noreturn)) static void child_main(const kb_sb_spec *s, int sync_rd, int report, int status_wr, int lifeline) {
    int keep[128], nkeep = 0;
    keep[nkeep++] = sync_rd; keep[nkeep++] = report; keep[nkeep++] = status_wr; keep[nkeep++] = lifeline;
    keep[nkeep++] = s->stdin_fd; keep[nkeep++] = s->stdout_fd; keep[nkeep++] = s->stderr_fd;
    keep[nkeep++] = s->upper_fd;
    for (int i = 0; i < s->nlower && nkeep < 120; i++) keep[nkeep++] = s->lower_fds[i];
    for (int i = 0; i < s->nmounts && nkeep < 128; i++) keep[nkeep++] = s->mounts[i].fd;
    close_others(keep, nkeep);

    char go;
    if (read(sync_rd, &go, 1) != 1) _exit(125);  // the parent gave up, or died before the maps
    close(sync_rd);
    if (syscall(SYS_setresgid, 0, 0, 0) < 0 || syscall(SYS_setresuid, 0, 0, 0) < 0)
        die(report, "become root in", "the user namespace", errno);
    // The sandbox dies with the process that made it (the helper, which may outlive kbuild).
    // A change of credentials clears the parent-death signal, so it is set after them;
    // the lifeline pipe covers a death in between.
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    if (unshare(CLONE_NEWCGROUP) < 0) die(report, "unshare", "the cgroup namespace", errno);
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) die(report, "make mounts private", NULL, errno);
    if (s->hostname && sethostname(s->hostname, strlen(s->hostname)) < 0) die(report, "sethostname", s->hostname, errno);

    int nodes[N_DEV_NODES];
    clone_dev_nodes(report, nodes);
    int rootfd = make_root(report, s);

    attach(report, fs_new(report, "proc", NULL, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC), rootfd, "/proc", 1);
    static const char *const ro_proc[] = {"proc/sys", "proc/sysrq-trigger", "proc/irq", "proc/bus", "proc/fs", NULL};
    for (int i = 0; ro_proc[i]; i++)
        rebind(report, rootfd, ro_proc[i], MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC);
    make_dev(report, rootfd, nodes, s->tmp_bytes);
    char size[24];
    text t = {size, sizeof size, 0};
    t_num(&t, s->tmp_bytes);
    const char *const tmpopts[] = {"mode", "1777", "size", size, NULL};
    attach(report, fs_new(report, "tmpfs", tmpopts, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV), rootfd, "/tmp", 1);
    for (int i = 0; i < s->nmounts; i++) attach(report, s->mounts[i].fd, rootfd, s->mounts[i].target, s->mounts[i].is_dir);

    if (fchdir(rootfd) < 0) die(report, "chdir to", "the new root", errno);
    if (syscall(SYS_pivot_root, ".", ".") < 0) die(report, "pivot_root into", "the new root", errno);
    if (umount2(".", MNT_DETACH) < 0) die(report, "detach", "the host's root", errno);
    if (chdir("/") < 0) die(report, "chdir to", "/", errno);
    close(rootfd);

    // PID 1: nothing in the sandbox may read this process's memory (a copy of the caller's).
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    int sfd = kb_sb_signals_fd();
    if (sfd < 0) die(report, "signalfd", NULL, errno);
    pid_t pid = (pid_t)syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
    if (pid < 0) die(report, "fork", "the command", errno);
    if (pid == 0) command_main(report, s);
    close(report);
    if (s->stdin_fd >= 0) close(s->stdin_fd);
    if (s->stdout_fd >= 0) close(s->stdout_fd);
    if (s->stderr_fd >= 0) close(s->stderr_fd);
    init_loop(pid, sfd, status_wr, lifeline);
}

// ---------------------------------------------------------------------------
// The parent's side.

static int fail(char *err, size_t errlen, const char *what, int e) {
    snprintf(err, errlen, "%s: %s", what, strerror(e));
    errno = e;
    return -1;
}

static int write_proc(pid_t pid, const char *file, const char *data, char *err, size_t errlen) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, file);
    if (write_file(path, data) < 0) {
        char what[96];
        snprintf(what, sizeof what, "write %s", path);
        return fail(err, errlen, what, errno);
    }
    return 0;
}

int kb_sb_spawn(const kb_sb_spec *s, kb_sb_child *child, char *err, size_t errlen) {
    if (s->net == KB_SB_NET_NONE)
        return fail(err, errlen, "start the sandbox: a loopback-only network is made first with kb_sb_new_netns", EINVAL);
    int sync_p[2], report_p[2], status_p[2], life_p[2];
    if (pipe2(life_p, O_CLOEXEC) < 0) return fail(err, errlen, "pipe", errno);
    if (pipe2(sync_p, O_CLOEXEC) < 0) { close(life_p[0]); close(life_p[1]); return fail(err, errlen, "pipe", errno); }
    if (pipe2(report_p, O_CLOEXEC) < 0) { close(sync_p[0]); close(sync_p[1]); return fail(err, errlen, "pipe", errno); }
    if (pipe2(status_p, O_CLOEXEC) < 0) {
        close(sync_p[0]); close(sync_p[1]); close(report_p[0]); close(report_p[1]);
        return fail(err, errlen, "pipe", errno);
    }
    uint64_t flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_PIDFD;

    int host_net = -1, e = 0;
    if (s->net == KB_SB_NET_JOIN) {
        // The child is born in the namespace this thread is in; the thread goes back at once.
        host_net = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
        if (host_net < 0 || setns(s->netns_fd, CLONE_NEWNET) < 0) {
            e = errno;
            if (host_net >= 0) close(host_net);
            host_net = -2;
        }
    }
    int pidfd = -1;
    pid_t pid = -1;
    if (host_net != -2) {
        struct kb_clone_args args = {.flags = flags, .pidfd = (uint64_t)(uintptr_t)&pidfd, .exit_signal = SIGCHLD};
        pid = (pid_t)syscall(SYS_clone3, &args, sizeof args);
        if (pid == 0) child_main(s, sync_p[0], report_p[1], status_p[1], life_p[0]);
        e = errno;
    }
    if (host_net >= 0) {
        if (setns(host_net, CLONE_NEWNET) < 0) abort();  // this thread must not stay in the sandbox's network
        close(host_net);
    }
    close(sync_p[0]); close(report_p[1]); close(status_p[1]); close(life_p[0]);
    if (pid < 0) {
        close(life_p[1]);
        close(sync_p[1]); close(report_p[0]); close(status_p[0]);
        return fail(err, errlen, host_net == -2 ? "join the network namespace" : "clone the sandbox", e);
    }

    int rc = write_proc(pid, "uid_map", s->uid_map, err, errlen);
    if (rc == 0) rc = write_proc(pid, "gid_map", s->gid_map, err, errlen);
    char pidtext[24];
    snprintf(pidtext, sizeof pidtext, "%d", (int)pid);
    for (int i = 0; rc == 0 && i < s->ncgroups; i++) {
        if (write_file(s->cgroup_procs[i], pidtext) < 0) {
            char what[512];
            snprintf(what, sizeof what, "join cgroup %s", s->cgroup_procs[i]);
            rc = fail(err, errlen, what, errno);
        }
    }
    if (rc == 0 && write_all(sync_p[1], "g", 1) < 0) rc = fail(err, errlen, "start the sandbox", errno);
    close(sync_p[1]);

    if (rc == 0) {
        kb_sb_report r;
        ssize_t n;
        do n = read(report_p[0], &r, sizeof r); while (n < 0 && errno == EINTR);
        if (n == (ssize_t)sizeof r) {
            r.what[sizeof r.what - 1] = 0;
            rc = fail(err, errlen, r.what, r.err);
        } else if (n != 0) {
            rc = fail(err, errlen, "read the sandbox's report", n < 0 ? errno : EIO);
        }
    }
    close(report_p[0]);
    if (rc != 0) {
        e = errno;
        syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
        kb_sb_reap(pidfd);
        close(pidfd);
        close(status_p[0]);
        close(life_p[1]);
        errno = e;
        return -1;
    }
    // life_p[1] stays open in the caller, never written: when it dies, PID 1 sees EOF.
    child->lifeline_fd = life_p[1];
    child->pid = pid;
    child->pidfd = pidfd;
    child->status_fd = status_p[0];
    return 0;
}

int kb_sb_detach(const char *path, int userns_fd, int readonly, char *err, size_t errlen) {
    // The last component must not be a symlink (one planted by an earlier sandbox would redirect the mount).
    int at = open(path, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (at < 0) {
        char what[512];
        snprintf(what, sizeof what, "open %s", path);
        return fail(err, errlen, what, errno);
    }
    struct stat st;
    if (fstat(at, &st) == 0 && S_ISLNK(st.st_mode)) {
        close(at);
        char what[512];
        snprintf(what, sizeof what, "mount %s: it is a symlink", path);
        return fail(err, errlen, what, ELOOP);
    }
    int fd = open_tree(at, "", AT_EMPTY_PATH | OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
    int e = errno;
    close(at);
    if (fd < 0) {
        char what[512];
        snprintf(what, sizeof what, "open_tree %s", path);
        return fail(err, errlen, what, e);
    }
    struct mount_attr a = {.attr_set = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV};
    if (readonly) a.attr_set |= MOUNT_ATTR_RDONLY;
    if (userns_fd >= 0) { a.attr_set |= MOUNT_ATTR_IDMAP; a.userns_fd = (uint64_t)userns_fd; }
    if (mount_setattr(fd, "", AT_EMPTY_PATH, &a, sizeof a) < 0) {
        e = errno;
        close(fd);
        char what[512];
        snprintf(what, sizeof what, "%s mount of %s", userns_fd >= 0 ? "idmap" : "set up", path);
        return fail(err, errlen, what, e);
    }
    return fd;
}

int kb_sb_userns(const char *uid_map, const char *gid_map, char *err, size_t errlen) {
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) return fail(err, errlen, "pipe", errno);
    pid_t pid = (pid_t)syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
    if (pid == 0) {
        char c;
        close(p[1]);
        ssize_t unused = read(p[0], &c, 1);  // hold the namespace until the parent has it open
        (void)unused;
        _exit(0);
    }
    int e = errno;
    close(p[0]);
    if (pid < 0) { close(p[1]); return fail(err, errlen, "clone a user namespace", e); }
    int fd = -1;
    int rc = write_proc(pid, "uid_map", uid_map, err, errlen);
    if (rc == 0) rc = write_proc(pid, "setgroups", "allow", err, errlen);
    if (rc == 0) rc = write_proc(pid, "gid_map", gid_map, err, errlen);
    if (rc == 0) {
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/ns/user", (int)pid);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) rc = fail(err, errlen, "open the user namespace", errno);
    }
    close(p[1]);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {}
    return rc == 0 ? fd : -1;
}

int kb_sb_reap(int pidfd) {
    siginfo_t info;
    for (;;) {
        if (syscall(SYS_waitid, P_PIDFD, pidfd, &info, WEXITED, NULL) == 0) return 0;
        if (errno != EINTR) return -1;
    }
}

int kb_sb_signal(int pidfd, int sig) {
    return (int)syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0);
}

int kb_sb_pipe(int fds[2]) {
    return pipe2(fds, O_CLOEXEC);
}

int kb_sb_pidfd_open(pid_t pid) {
    return (int)syscall(SYS_pidfd_open, pid, 0);
}

int kb_sb_own_dir(char *out, size_t len) {
    Dl_info info;
    if (!dladdr((void *)kb_sb_own_dir, &info) || !info.dli_fname) return -1;
    const char *slash = strrchr(info.dli_fname, '/');
    size_t n = slash ? (size_t)(slash - info.dli_fname) : 0;
    if (n + 1 > len) return -1;
    memcpy(out, info.dli_fname, n);
    out[n] = 0;
    return 0;
}

int kb_sb_spawn_closefrom(posix_spawn_file_actions_t *actions, int from) {
    return posix_spawn_file_actions_addclosefrom_np(actions, from);
}

int kb_sb_socketpair(int fds[2]) {
    return socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds);
}

int kb_sb_send(int sock, const void *buf, size_t len, const int *fds, int nfds) {
    if (nfds < 0 || nfds > 200) { errno = EINVAL; return -1; }
    union {
        char space[CMSG_SPACE(sizeof(int) * 200)];
        struct cmsghdr align;
    } control;
    memset(&control, 0, sizeof control);
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    if (nfds > 0) {
        msg.msg_control = control.space;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
    }
    ssize_t n;
    do n = sendmsg(sock, &msg, MSG_NOSIGNAL); while (n < 0 && errno == EINTR);
    if (n < 0) return -1;
    if ((size_t)n != len) { errno = EMSGSIZE; return -1; }
    return 0;
}

int kb_sb_new_netns(char *err, size_t errlen) {
    if (unshare(CLONE_NEWNET) < 0) return fail(err, errlen, "unshare a network namespace", errno);
    int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (sock < 0) return fail(err, errlen, "socket for lo", errno);
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    memcpy(ifr.ifr_name, "lo", 3);
    int rc = ioctl(sock, SIOCGIFFLAGS, &ifr);
    if (rc == 0) {
        ifr.ifr_flags |= IFF_UP;
        rc = ioctl(sock, SIOCSIFFLAGS, &ifr);
    }
    int e = errno;
    close(sock);
    if (rc < 0) return fail(err, errlen, "bring up lo", e);
    // The namespace belongs to the host's user namespace, not the sandbox's: let its
    // root bind low ports and ping, as it could in a namespace of its own.
    if (write_file("/proc/sys/net/ipv4/ip_unprivileged_port_start", "0") < 0)
        return fail(err, errlen, "write net.ipv4.ip_unprivileged_port_start", errno);
    if (write_file("/proc/sys/net/ipv4/ping_group_range", "0 2147483647") < 0)
        return fail(err, errlen, "write net.ipv4.ping_group_range", errno);
    return 0;
}

short kb_sb_spawn_setsid_flag(void) {
    return POSIX_SPAWN_SETSID;
}
