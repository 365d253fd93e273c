"""Docker's default seccomp policy, and conversion of Docker-format profiles to the OCI shape.

A Docker-format profile is an allow-list whose rules may be conditional: a
rule ``includes`` caps/arches/minKernel only applies when the container has
all those capabilities (in its bounding set), runs on one of those
architectures, on at least that kernel; ``excludes`` drops a rule when any of
them holds. This is how granting ``CAP_SYS_ADMIN`` also opens ``mount``,
``unshare`` and namespace-creating ``clone``: the capability alone would not
help if seccomp still said EPERM. :func:`to_oci` evaluates those conditions
for one container and emits the plain ``linux.seccomp`` object an OCI runtime
takes.

The default policy below follows the content of Docker's ``default.json``
(moby/profiles): deny with EPERM by default, allow the syscalls an ordinary
process needs, and allow the privileged ones only alongside the capability
that governs them. It is kept here as grouped name lists and a few rule
records rather than a JSON file, so each group says what it is for.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Iterable
from dataclasses import dataclass

from kapal.errors import InvalidArgument

EPERM = 1
ENOSYS = 38

# clone(2) flags that create namespaces. Without CAP_SYS_ADMIN a container may
# clone threads and processes, but not new namespaces (user namespaces
# especially: they are the usual first step of kernel exploits).
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
NAMESPACE_FLAGS = (
    CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET
)

# socket(2) families the default policy refuses: AF_ALG (kernel crypto API, a
# recurring source of kernel bugs) and AF_VSOCK (talks to the hypervisor).
AF_ALG = 38
AF_VSOCK = 40

# personality(2) values a container may set: the default, UNAME26,
# ADDR_NO_RANDOMIZE (with and without UNAME26), and the 0xffffffff query.
PER_LINUX = 0x0
UNAME26 = 0x0008
ADDR_NO_RANDOMIZE = 0x0020000
PERSONALITY_QUERY = 0xFFFFFFFF


def _names(text: str) -> tuple[str, ...]:
    return tuple(text.split())


# Allowed for every container, grouped by what a program uses them for.
ALWAYS_ALLOWED: dict[str, tuple[str, ...]] = {
    "files and descriptors": _names(
        """
        access chdir chmod chown chown32 close close_range copy_file_range creat dup dup2 dup3
        faccessat faccessat2 fadvise64 fadvise64_64 fallocate fchdir fchmod fchmodat fchmodat2
        fchown fchown32 fchownat fcntl fcntl64 fdatasync flock fstat fstat64 fstatat64 fstatfs
        fstatfs64 fsync ftruncate ftruncate64 futimesat getcwd getdents getdents64 ioctl lchown
        lchown32 link linkat _llseek lseek lstat lstat64 mkdir mkdirat mknod mknodat
        name_to_handle_at newfstatat open openat openat2 pread64 preadv preadv2 pwrite64 pwritev
        pwritev2 read readahead readlink readlinkat readv rename renameat renameat2 rmdir sendfile
        sendfile64 splice stat stat64 statfs statfs64 statx symlink symlinkat sync sync_file_range
        syncfs tee truncate truncate64 umask unlink unlinkat utime utimensat utimensat_time64
        utimes vmsplice write writev
        """
    ),
    "extended attributes": _names(
        """
        fgetxattr flistxattr fremovexattr fsetxattr getxattr getxattrat lgetxattr listxattr
        listxattrat llistxattr lremovexattr lsetxattr removexattr removexattrat setxattr setxattrat
        """
    ),
    "reading the mount table": _names("listmount statmount"),
    "waiting for events": _names(
        """
        epoll_create epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2 epoll_wait
        epoll_wait_old eventfd eventfd2 fanotify_mark inotify_add_watch inotify_init inotify_init1
        inotify_rm_watch _newselect poll ppoll ppoll_time64 pselect6 pselect6_time64 select
        signalfd signalfd4 timerfd_create timerfd_gettime timerfd_gettime64 timerfd_settime
        timerfd_settime64
        """
    ),
    "asynchronous I/O": _names(
        "io_cancel io_destroy io_getevents io_pgetevents io_pgetevents_time64 io_setup io_submit "
        "ioprio_get ioprio_set"
    ),
    "memory": _names(
        """
        brk cachestat madvise map_shadow_stack membarrier memfd_create memfd_secret mincore mlock
        mlock2 mlockall mmap mmap2 mprotect mremap mseal msync munlock munlockall munmap pkey_alloc
        pkey_free pkey_mprotect remap_file_pages
        """
    ),
    "processes and threads": _names(
        """
        capget capset execve execveat exit exit_group fork futex futex_requeue futex_time64
        futex_wait futex_waitv futex_wake get_robust_list get_thread_area getcpu getpgid getpgrp
        getpid getppid getpriority getrusage getsid gettid kill pidfd_open pidfd_send_signal prctl
        process_mrelease restart_syscall riscv_hwprobe rseq seccomp set_robust_list
        set_thread_area set_tid_address setpgid setpriority setsid sysinfo tgkill times tkill
        uname uretprobe vfork wait4 waitid waitpid
        """
    ),
    "scheduling": _names(
        """
        sched_get_priority_max sched_get_priority_min sched_getaffinity sched_getattr
        sched_getparam sched_getscheduler sched_rr_get_interval sched_rr_get_interval_time64
        sched_setaffinity sched_setattr sched_setparam sched_setscheduler sched_yield
        """
    ),
    "credentials": _names(
        """
        getegid getegid32 geteuid geteuid32 getgid getgid32 getgroups getgroups32 getresgid
        getresgid32 getresuid getresuid32 getuid getuid32 setfsgid setfsgid32 setfsuid setfsuid32
        setgid setgid32 setgroups setgroups32 setregid setregid32 setresgid setresgid32 setresuid
        setresuid32 setreuid setreuid32 setuid setuid32
        """
    ),
    "resource limits": _names("getrlimit prlimit64 setrlimit ugetrlimit"),
    "signals": _names(
        """
        alarm pause rt_sigaction rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn
        rt_sigsuspend rt_sigtimedwait rt_sigtimedwait_time64 rt_tgsigqueueinfo sigaltstack
        sigprocmask sigreturn
        """
    ),
    "clocks and timers": _names(
        """
        adjtimex clock_adjtime clock_adjtime64 clock_getres clock_getres_time64 clock_gettime
        clock_gettime64 clock_nanosleep clock_nanosleep_time64 getitimer gettimeofday nanosleep
        setitimer time timer_create timer_delete timer_getoverrun timer_gettime timer_gettime64
        timer_settime timer_settime64
        """
    ),
    "sockets (socket itself is below, by family)": _names(
        """
        accept accept4 bind connect getpeername getsockname getsockopt listen recv recvfrom
        recvmmsg recvmmsg_time64 recvmsg send sendmmsg sendmsg sendto setsockopt shutdown
        socketcall socketpair
        """
    ),
    "pipes and System V / POSIX IPC": _names(
        """
        ipc mq_getsetattr mq_notify mq_open mq_timedreceive mq_timedreceive_time64 mq_timedsend
        mq_timedsend_time64 mq_unlink msgctl msgget msgrcv msgsnd pipe pipe2 semctl semget semop
        semtimedop semtimedop_time64 shmat shmctl shmdt shmget
        """
    ),
    "self-sandboxing": _names("landlock_add_rule landlock_create_ruleset landlock_restrict_self"),
    "randomness": _names("getrandom"),
}


@dataclass(frozen=True)
class Arg:
    """One argument comparison (the OCI ``args`` entry): ``op(arg[index], value[, value_two])``."""

    index: int
    value: int
    op: str
    value_two: int = 0


@dataclass(frozen=True)
class Rule:
    """A conditional allow (or deny) rule, the data behind one Docker-format ``syscalls`` entry."""

    names: tuple[str, ...]
    action: str = "SCMP_ACT_ALLOW"
    args: tuple[Arg, ...] = ()
    errno: int | None = None
    needs_caps: tuple[str, ...] = ()
    """Applies only when the container holds every one of these capabilities."""
    only_arches: tuple[str, ...] = ()
    """Applies only on these architectures (Docker's native names: amd64, arm64, x86, ...)."""
    min_kernel: str | None = None
    unless_caps: tuple[str, ...] = ()
    """Dropped when the container holds any of these capabilities."""
    unless_arches: tuple[str, ...] = ()
    comment: str = ""

    def docker(self) -> dict:
        """This rule as a Docker-format ``syscalls`` entry."""
        entry: dict = {"names": list(self.names), "action": self.action}
        if self.errno is not None:
            entry["errnoRet"] = self.errno
        if self.args:
            entry["args"] = [
                {"index": a.index, "value": a.value, "valueTwo": a.value_two, "op": a.op} for a in self.args
            ]
        if self.comment:
            entry["comment"] = self.comment
        includes: dict = {}
        if self.needs_caps:
            includes["caps"] = list(self.needs_caps)
        if self.only_arches:
            includes["arches"] = list(self.only_arches)
        if self.min_kernel:
            includes["minKernel"] = self.min_kernel
        excludes: dict = {}
        if self.unless_caps:
            excludes["caps"] = list(self.unless_caps)
        if self.unless_arches:
            excludes["arches"] = list(self.unless_arches)
        if includes:
            entry["includes"] = includes
        if excludes:
            entry["excludes"] = excludes
        return entry


def _first_arg(value: int, op: str = "SCMP_CMP_EQ", index: int = 0) -> tuple[Arg, ...]:
    return (Arg(index, value, op),)


_S390 = ("s390", "s390x")

CONDITIONAL_RULES: tuple[Rule, ...] = (
    Rule(
        _names("process_vm_readv process_vm_writev ptrace"),
        min_kernel="4.8",
        comment="before 4.8 ptrace could bypass seccomp",
    ),
    Rule(("socket",), args=_first_arg(AF_ALG, "SCMP_CMP_LT"), comment="any family but AF_ALG and AF_VSOCK"),
    Rule(("socket",), args=_first_arg(AF_ALG + 1)),
    Rule(("socket",), args=_first_arg(AF_VSOCK, "SCMP_CMP_GT")),
    *(
        Rule(("personality",), args=_first_arg(value))
        for value in (PER_LINUX, UNAME26, ADDR_NO_RANDOMIZE, ADDR_NO_RANDOMIZE | UNAME26, PERSONALITY_QUERY)
    ),
    Rule(_names("sync_file_range2 swapcontext"), only_arches=("ppc64le",)),
    Rule(
        _names("arm_fadvise64_64 arm_sync_file_range sync_file_range2 breakpoint cacheflush set_tls"),
        only_arches=("arm", "arm64"),
    ),
    Rule(("arch_prctl",), only_arches=("amd64", "x32")),
    Rule(("modify_ldt",), only_arches=("amd64", "x32", "x86")),
    Rule(_names("s390_pci_mmio_read s390_pci_mmio_write s390_runtime_instr"), only_arches=_S390),
    Rule(("riscv_flush_icache",), only_arches=("riscv64",)),
    Rule(("open_by_handle_at",), needs_caps=("CAP_DAC_READ_SEARCH",)),
    Rule(
        _names(
            """
            bpf clone clone3 fanotify_init fsconfig fsmount fsopen fspick lookup_dcookie
            lsm_get_self_attr lsm_list_modules lsm_set_self_attr mount mount_setattr move_mount
            open_tree perf_event_open quotactl quotactl_fd setdomainname sethostname setns syslog
            umount umount2 unshare
            """
        ),
        needs_caps=("CAP_SYS_ADMIN",),
        comment="namespaces, mounts and other administration: only with CAP_SYS_ADMIN",
    ),
    Rule(
        ("clone",),
        args=(Arg(0, NAMESPACE_FLAGS, "SCMP_CMP_MASKED_EQ"),),
        unless_caps=("CAP_SYS_ADMIN",),
        unless_arches=_S390,
        comment="clone without namespace flags",
    ),
    Rule(
        ("clone",),
        args=(Arg(1, NAMESPACE_FLAGS, "SCMP_CMP_MASKED_EQ"),),
        only_arches=_S390,
        unless_caps=("CAP_SYS_ADMIN",),
        comment="s390 passes clone's flags second",
    ),
    Rule(
        ("clone3",),
        action="SCMP_ACT_ERRNO",
        errno=ENOSYS,
        unless_caps=("CAP_SYS_ADMIN",),
        comment="its flags are in memory seccomp cannot read: ENOSYS makes libc fall back to clone",
    ),
    Rule(("reboot",), needs_caps=("CAP_SYS_BOOT",)),
    Rule(("chroot",), needs_caps=("CAP_SYS_CHROOT",)),
    Rule(_names("delete_module init_module finit_module"), needs_caps=("CAP_SYS_MODULE",)),
    Rule(("acct",), needs_caps=("CAP_SYS_PACCT",)),
    Rule(
        _names("kcmp pidfd_getfd process_madvise process_vm_readv process_vm_writev ptrace"),
        needs_caps=("CAP_SYS_PTRACE",),
    ),
    Rule(_names("iopl ioperm"), needs_caps=("CAP_SYS_RAWIO",)),
    Rule(_names("settimeofday stime clock_settime clock_settime64"), needs_caps=("CAP_SYS_TIME",)),
    Rule(("vhangup",), needs_caps=("CAP_SYS_TTY_CONFIG",)),
    Rule(_names("get_mempolicy mbind set_mempolicy set_mempolicy_home_node"), needs_caps=("CAP_SYS_NICE",)),
    Rule(("syslog",), needs_caps=("CAP_SYSLOG",)),
    Rule(("bpf",), needs_caps=("CAP_BPF",)),
    Rule(("perf_event_open",), needs_caps=("CAP_PERFMON",)),
)

# Each native architecture with the compatible ABIs its processes may also use.
ARCH_MAP: dict[str, tuple[str, ...]] = {
    "SCMP_ARCH_X86_64": ("SCMP_ARCH_X86", "SCMP_ARCH_X32"),
    "SCMP_ARCH_AARCH64": ("SCMP_ARCH_ARM",),
    "SCMP_ARCH_S390X": ("SCMP_ARCH_S390",),
    "SCMP_ARCH_PPC64LE": (),
    "SCMP_ARCH_RISCV64": (),
}

# Machine names (uname -m, Go's GOARCH) to the names Docker profiles use in includes/excludes.
_NATIVE_ARCH = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "i386": "x86",
    "i686": "x86",
    "x86": "x86",
    "386": "x86",
    "armv7l": "arm",
    "armv6l": "arm",
    "arm": "arm",
    "s390x": "s390x",
    "s390": "s390",
    "ppc64le": "ppc64le",
    "ppc64": "ppc64",
    "ppc": "ppc",
    "riscv64": "riscv64",
    "loongarch64": "loong64",
    "loong64": "loong64",
    "mips64": "mips64",
    "mipsel": "mipsel",
    "mips64el": "mipsel64",
    "x32": "x32",
}
_SECCOMP_ARCH = {
    "amd64": "SCMP_ARCH_X86_64", "arm64": "SCMP_ARCH_AARCH64", "x86": "SCMP_ARCH_X86",
    "arm": "SCMP_ARCH_ARM", "s390x": "SCMP_ARCH_S390X", "s390": "SCMP_ARCH_S390",
    "ppc64le": "SCMP_ARCH_PPC64LE", "ppc64": "SCMP_ARCH_PPC64", "ppc": "SCMP_ARCH_PPC",
    "riscv64": "SCMP_ARCH_RISCV64", "loong64": "SCMP_ARCH_LOONGARCH64",
    "mips64": "SCMP_ARCH_MIPS64", "mipsel": "SCMP_ARCH_MIPSEL", "mipsel64": "SCMP_ARCH_MIPSEL64",
    "x32": "SCMP_ARCH_X32",
}  # fmt: skip

# The fields of a Docker-format profile that are already in the OCI shape and pass through.
_PASSTHROUGH = (
    "defaultAction",
    "defaultErrnoRet",
    "architectures",
    "flags",
    "listenerPath",
    "listenerMetadata",
)


def default_profile() -> dict:
    """Docker's default profile, in Docker's JSON format (what ``--security-opt seccomp=`` files hold)."""
    always = sorted({name for names in ALWAYS_ALLOWED.values() for name in names})
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "archMap": [
            {"architecture": arch, "subArchitectures": list(subs)} for arch, subs in ARCH_MAP.items()
        ],
        "syscalls": [{"names": always, "action": "SCMP_ACT_ALLOW"}]
        + [rule.docker() for rule in CONDITIONAL_RULES],
    }


def native_arch(machine: str | None = None) -> str:
    """Docker's name for an architecture (``amd64`` for ``x86_64``), as includes/excludes spell it."""
    machine = machine or platform.machine()
    return _NATIVE_ARCH.get(machine.lower(), machine.lower())


def kernel_version(release: str | None = None) -> tuple[int, int]:
    """(major, minor) of a kernel release string such as ``6.1.0-18-amd64``."""
    release = release or os.uname().release
    numbers = []
    for part in release.split(".")[:2]:
        digits = ""
        for char in part:
            if not char.isdigit():
                break
            digits += char
        numbers.append(int(digits or 0))
    while len(numbers) < 2:
        numbers.append(0)
    return numbers[0], numbers[1]


def _parse_min_kernel(value: object) -> tuple[int, int] | None:
    if value in (None, ""):
        return None
    parts = str(value).split(".")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise InvalidArgument(f'invalid kernel version: {value!r}, expected "<kernel>.<major>"')
    return int(parts[0]), int(parts[1])


def _normalize_caps(capabilities: Iterable[str]) -> set[str]:
    normalized = set()
    for cap in capabilities:
        cap = cap.upper()
        normalized.add(cap if cap.startswith("CAP_") else "CAP_" + cap)
    return normalized


def _strings(value: object, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InvalidArgument(f"seccomp profile: {what} must be a list of strings")
    return value


def to_oci(
    profile: dict,
    capabilities: Iterable[str],
    arch: str | None = None,
    kernel: tuple[int, int] | None = None,
) -> dict:
    """The OCI ``linux.seccomp`` object of a Docker-format *profile* for one container.

    *capabilities* is the container's bounding set (Docker evaluates
    includes/excludes against it), *arch* the machine (``x86_64`` or Docker's
    ``amd64``; default: this host) and *kernel* the (major, minor) kernel
    version (default: this host's). A profile with neither a default action
    nor syscalls means "no filter": the result is then ``{}``.
    """
    if not isinstance(profile, dict):
        raise InvalidArgument("seccomp profile must be a JSON object")
    syscalls = profile.get("syscalls") or []
    if not profile.get("defaultAction") and not syscalls:
        return {}
    if not isinstance(syscalls, list):
        raise InvalidArgument("seccomp profile: syscalls must be a list")
    if profile.get("architectures") and profile.get("archMap"):
        raise InvalidArgument(
            "both 'architectures' and 'archMap' are specified in the seccomp profile, "
            "use either 'architectures' or 'archMap'"
        )
    caps = _normalize_caps(capabilities)
    native = native_arch(arch)
    kernel = kernel or kernel_version()

    result: dict = {key: profile[key] for key in _PASSTHROUGH if profile.get(key) not in (None, [], "")}
    scmp_arch = _SECCOMP_ARCH.get(native)
    for entry in profile.get("archMap") or []:
        if scmp_arch and entry.get("architecture") == scmp_arch:
            result["architectures"] = [scmp_arch, *(entry.get("subArchitectures") or [])]
            break

    out = []
    for call in syscalls:
        if not isinstance(call, dict):
            raise InvalidArgument("seccomp profile: each syscalls entry must be an object")
        names = _strings(call.get("names"), "names")
        if call.get("name"):
            if names:
                raise InvalidArgument(
                    "both 'name' and 'names' are specified in the seccomp profile, "
                    "use either 'name' or 'names'"
                )
            names = [call["name"]]
        if not names:
            raise InvalidArgument("seccomp profile: a syscalls entry has no names")
        excludes = call.get("excludes") or {}
        includes = call.get("includes") or {}
        if native in _strings(excludes.get("arches"), "excludes.arches"):
            continue
        if caps & _normalize_caps(_strings(excludes.get("caps"), "excludes.caps")):
            continue
        minimum = _parse_min_kernel(excludes.get("minKernel"))
        if minimum is not None and kernel >= minimum:
            continue
        arches = _strings(includes.get("arches"), "includes.arches")
        if arches and native not in arches:
            continue
        if not _normalize_caps(_strings(includes.get("caps"), "includes.caps")) <= caps:
            continue
        minimum = _parse_min_kernel(includes.get("minKernel"))
        if minimum is not None and kernel < minimum:
            continue
        if not call.get("action"):
            raise InvalidArgument(f"seccomp profile: no action for {', '.join(names)}")
        rule: dict = {"names": list(names), "action": call["action"]}
        if call.get("errnoRet") is not None:
            rule["errnoRet"] = call["errnoRet"]
        if call.get("args"):
            rule["args"] = [
                {
                    "index": a["index"],
                    "value": a.get("value", 0),
                    "valueTwo": a.get("valueTwo", 0),
                    "op": a["op"],
                }
                for a in call["args"]
            ]
        out.append(rule)
    result["syscalls"] = out
    return result


def parse_profile(text: str | bytes, source: str = "seccomp profile") -> dict:
    """A Docker-format profile from JSON text, with the decoding error said plainly."""
    try:
        profile = json.loads(text)
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidArgument(f"Decoding seccomp profile failed ({source}): {error}") from None
    if not isinstance(profile, dict):
        raise InvalidArgument(f"Decoding seccomp profile failed ({source}): not a JSON object")
    return profile


def load_profile(path: str) -> dict:
    """A Docker-format profile from a file (``--security-opt seccomp=/path/profile.json``)."""
    try:
        with open(path, "rb") as file:
            text = file.read(16 * 1024 * 1024)
    except OSError as error:
        raise InvalidArgument(f"opening seccomp profile ({path}) failed: {error.strerror}") from None
    return parse_profile(text, path)
