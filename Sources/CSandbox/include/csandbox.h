#ifndef CSANDBOX_H
#define CSANDBOX_H

// The fork-to-exec half of kbuild's sandbox. Swift's Glibc lacks clone3,
// pivot_root, setns and the new mount API, and a multithreaded process cannot
// unshare a user namespace, so everything between clone and execve is here.
// kb_sb_spawn runs in the single-threaded helper (kbuild-sandbox); the other
// functions are called by kbuild. Decisions (limits, paths, cgroups) are made
// in Swift; this file only acts.

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

enum {
    KB_SB_NET_NONE = 0,   ///< a new network namespace with only loopback, up (made by the helper: kb_sb_new_netns)
    KB_SB_NET_HOST = 1,   ///< the caller's network namespace
    KB_SB_NET_JOIN = 2,   ///< the namespace open at netns_fd (e.g. /run/netns/NAME)
};

/// A mount made ready by the caller (kb_sb_detach), attached inside the root at `target`.
typedef struct {
    int fd;
    const char *target;   ///< absolute path inside the sandbox; made if missing
    int is_dir;           ///< what to make if missing: a directory (1) or an empty file (0)
} kb_sb_mount;

typedef struct {
    const char *const *argv;       ///< argv[0]: a path, or a name looked up in the sandbox's PATH
    const char *const *envp;
    const char *cwd;
    uint32_t uid, gid;             ///< inside the sandbox
    const char *hostname;

    const int *lower_fds;          ///< detached (idmapped) mounts, topmost first
    int nlower;
    int upper_fd;                  ///< a kept upper layer: a detached mount of a dir holding upper/ and work/
                                   ///< (owned by the mapped root), or -1 for a tmpfs upper
    const char *upper_name;        ///< the kept upper dir's host path, for messages
    uint64_t upper_tmpfs_bytes;    ///< size of the tmpfs upper (when upper_fd is -1)
    uint64_t tmp_bytes;            ///< size of /tmp and /dev/shm
    const kb_sb_mount *mounts;
    int nmounts;

    int net;                       ///< KB_SB_NET_*
    int netns_fd;                  ///< for KB_SB_NET_JOIN

    const char *uid_map, *gid_map; ///< written to /proc/PID/{uid,gid}_map, e.g. "0 1879048192 65536\n"
    const char *const *cgroup_procs; ///< cgroup.procs files the child joins before it runs
    int ncgroups;
    const int *rlimit_resources;
    const uint64_t *rlimit_values; ///< soft, hard pairs
    int nrlimits;

    int stdin_fd, stdout_fd, stderr_fd;
    /// stdin is a terminal made for this command (kbuild run's): it becomes the command's controlling terminal.
    /// Never set for a terminal passed through from a caller (a sandbox with it could type into the caller's shell).
    int take_terminal;
} kb_sb_spec;

typedef struct {
    pid_t pid;                     ///< the sandbox's init, host PID
    int pidfd;
    int status_fd;                 ///< init writes a kb_sb_status here when the command ends
    int lifeline_fd;               ///< held, never written: PID 1 exits at its EOF. Close it once PID 1 is reaped.
} kb_sb_child;

typedef struct {
    int32_t kind;                  ///< 1: exited with code, 2: killed by signal code
    int32_t code;
} kb_sb_status;

/// What the helper says once the command runs (err 0, with PID 1's host PID)
/// or failed to start (err, and what it was doing).
typedef struct {
    int32_t err;
    int32_t pid;
    char what[480];
} kb_sb_report;

/// Starts the sandbox (from a single-threaded process: the helper). On failure returns -1 and writes a message naming the
/// step and the object that failed into err; no process, mount or namespace is left.
int kb_sb_spawn(const kb_sb_spec *spec, kb_sb_child *child, char *err, size_t errlen);

/// A detached copy of the mount tree at `path` (open_tree OPEN_TREE_CLONE), nosuid
/// and nodev, idmapped through `userns_fd` when it is >= 0, read-only when asked.
/// The last component of `path` must not be a symlink.
int kb_sb_detach(const char *path, int userns_fd, int readonly, char *err, size_t errlen);

/// A user namespace with the given maps, held open by fd (for idmapped mounts).
int kb_sb_userns(const char *uid_map, const char *gid_map, char *err, size_t errlen);

/// Blocks every signal and returns a signalfd that reads them.
int kb_sb_signals_fd(void);

/// The directory of the binary this code is linked into (the kbuild executable,
/// or a test bundle), for finding the helper beside it. 0 on success.
int kb_sb_own_dir(char *out, size_t len);

#include <spawn.h>
/// POSIX_SPAWN_SETSID, which Swift does not see (a GNU extension).
short kb_sb_spawn_setsid_flag(void);

/// posix_spawn_file_actions_addclosefrom_np, which Swift does not see.
int kb_sb_spawn_closefrom(posix_spawn_file_actions_t *actions, int from);

/// pidfd_open(2).
int kb_sb_pidfd_open(pid_t pid);

/// waitid(P_PIDFD): reaps the sandbox's init. Returns 0 once it is gone.
int kb_sb_reap(int pidfd);

/// pipe2(O_CLOEXEC): no other child of this process may inherit either end.
int kb_sb_pipe(int fds[2]);

/// Moves the calling (single-threaded) process into a new network namespace
/// with loopback up, made ahead of a sandbox that joins it as KB_SB_NET_HOST:
/// creating one is serialised in the kernel, so it is kept off the start path.
int kb_sb_new_netns(char *err, size_t errlen);

/// socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC): the helper's control socket.
int kb_sb_socketpair(int fds[2]);

/// Sends one message with `nfds` descriptors attached (SCM_RIGHTS). 0 on success.
int kb_sb_send(int sock, const void *buf, size_t len, const int *fds, int nfds);

/// pidfd_send_signal(2).
int kb_sb_signal(int pidfd, int sig);

#endif
