"""The OCI runtime spec (``config.json``) Docker would give a container, adjusted to this host.

Docker builds its spec by starting from a fixed default (moby's
``oci/defaults.go``: default mounts, masked and read-only ``/proc`` paths,
namespaces, the device cgroup allow-list, 14 capabilities) and applying the
container's create request on top (``daemon/oci_linux.go``). This module does
the same in one pure function, :func:`build_spec`, so what a container gets is
decided in one place and can be checked without running anything.

Two things differ on purpose, both because the daemon may not hold everything a
stock Docker host has:

* capabilities are intersected with the daemon's own bounding set. A default
  capability the daemon lacks is silently left out (the runtime would fail the
  container otherwise); one the user asked for by name is refused up front.
* rlimits never exceed the daemon's hard limits (an unprivileged daemon cannot
  raise them); ``RLIMIT_NOFILE`` is set to a sane value even when not asked for.
"""

from __future__ import annotations

import copy
import os
import posixpath
import resource
import socket
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache

from kapal.errors import InvalidArgument
from kapal.runtime import seccomp
from kapal.runtime.users import ResolvedUser, mkdir_in_root, resolve_user

OCI_VERSION = "1.0.2"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_SHM_SIZE = 64 * 1024 * 1024
MAX_DEFAULT_NOFILE = 1048576
RLIM_INFINITY = 2**64 - 1
"""The OCI spec's rlimit values are unsigned 64-bit: infinity is all ones (Docker's ``-1``)."""


def _words(text: str) -> list[str]:
    return text.split()


# Linux capabilities by number: the index is the bit in /proc/<pid>/status Cap* masks.
CAPABILITIES: tuple[str, ...] = tuple(
    "CAP_" + name
    for name in _words(
        """
    CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP LINUX_IMMUTABLE
    NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER SYS_MODULE SYS_RAWIO
    SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE SYS_RESOURCE SYS_TIME
    SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP MAC_OVERRIDE MAC_ADMIN SYSLOG
    WAKE_ALARM BLOCK_SUSPEND AUDIT_READ PERFMON BPF CHECKPOINT_RESTORE
    """
    )
)
_CAP_ORDER = {name: bit for bit, name in enumerate(CAPABILITIES)}

# What a Docker container gets without --cap-add/--cap-drop (moby oci/caps/defaults.go).
DEFAULT_CAPABILITIES: tuple[str, ...] = tuple(
    "CAP_" + name
    for name in _words(
        """
    CHOWN DAC_OVERRIDE FSETID FOWNER MKNOD NET_RAW SETGID SETUID SETFCAP SETPCAP
    NET_BIND_SERVICE SYS_CHROOT KILL AUDIT_WRITE
    """
    )
)

MASKED_PATHS: tuple[str, ...] = (
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)
READONLY_PATHS: tuple[str, ...] = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

# Ulimit names as Docker's --ulimit spells them, to the OCI rlimit type.
ULIMITS = {
    name: "RLIMIT_" + name.upper()
    for name in _words(
        "as core cpu data fsize locks memlock msgqueue nice nofile nproc rss rtprio rttime sigpending stack"
    )
}
_RESOURCE_CONSTANTS = {
    "RLIMIT_" + name.upper(): getattr(resource, "RLIMIT_" + name.upper())
    for name in ULIMITS
    if hasattr(resource, "RLIMIT_" + name.upper())
}

# (type, major, minor or None for any) of the character devices every container may use:
# the default device nodes, the console and ptys, and /dev/net/tun.
_ALLOWED_DEVICES: tuple[tuple[str, int, int | None], ...] = (
    ("c", 1, 3),  # null
    ("c", 1, 5),  # zero
    ("c", 1, 7),  # full
    ("c", 1, 8),  # random
    ("c", 1, 9),  # urandom
    ("c", 5, 0),  # tty
    ("c", 5, 1),  # console
    ("c", 5, 2),  # ptmx
    ("c", 136, None),  # pts/*
    ("c", 10, 200),  # net/tun
)
# Device nodes created in every container's /dev: (name, major, minor).
_DEFAULT_DEVICE_NODES: tuple[tuple[str, int, int], ...] = (
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
)
# Host /dev entries a privileged container does not get (containerd's HostDevices rules).
_SKIPPED_HOST_DEV_DIRS = {"pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"}

# Sysctls that are namespaced, so a container may set them (Docker's allow-list).
_IPC_SYSCTLS = {
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
}


@dataclass
class HostFacts:
    """What the daemon itself may grant: a container can never get more than the daemon holds."""

    capabilities: set[str]
    nofile_hard: int
    nproc_hard: int
    cgroup_version: int
    hard_limits: dict[str, int] = field(default_factory=dict)
    """Hard limits of the other rlimits, by OCI name (``RLIMIT_CORE``...); missing means unknown."""

    @classmethod
    def detect(cls) -> HostFacts:
        """Read this process's bounding set, hard rlimits, and the cgroup version mounted."""
        limits = {name: _hard_limit(number) for name, number in _RESOURCE_CONSTANTS.items()}
        return cls(
            capabilities=daemon_capabilities(),
            nofile_hard=limits.get("RLIMIT_NOFILE", RLIM_INFINITY),
            nproc_hard=limits.get("RLIMIT_NPROC", RLIM_INFINITY),
            cgroup_version=2 if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else 1,
            hard_limits=limits,
        )

    def hard_limit(self, rlimit: str) -> int | None:
        if rlimit == "RLIMIT_NOFILE":
            return self.nofile_hard
        if rlimit == "RLIMIT_NPROC":
            return self.nproc_hard
        return self.hard_limits.get(rlimit)


def _hard_limit(number: int) -> int:
    hard = resource.getrlimit(number)[1]
    return RLIM_INFINITY if hard < 0 or hard == resource.RLIM_INFINITY else hard


def capabilities_from_mask(mask: int) -> set[str]:
    """Capability names of a /proc status mask such as CapBnd (unnamed bits are left out)."""
    return {name for bit, name in enumerate(CAPABILITIES) if mask >> bit & 1}


@cache
def daemon_capabilities() -> set[str]:
    """The capabilities in this process's bounding set (what any child, a container included, may hold)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("CapBnd:"):
                    return capabilities_from_mask(int(line.split()[1], 16))
    except OSError:
        pass
    return set(CAPABILITIES)


# --- process ---------------------------------------------------------------------------------------


def process_args(image_config: dict, create: dict) -> list[str]:
    """The container's argv by Docker's rules for Entrypoint and Cmd.

    The create request's Entrypoint replaces the image's whenever the key is
    sent (``[]`` or ``[""]`` clear it). When the request gives a non-empty
    Entrypoint the image's Cmd is dropped (it was written for the image's
    entrypoint); otherwise the request's Cmd, or failing that the image's, is
    appended. ``[""]`` counts as an Entrypoint that was given (so the image's
    Cmd is dropped) and is then cleared, exactly as dockerd does.
    """
    entrypoint = create.get("Entrypoint")
    cmd = list(create.get("Cmd") or [])
    if not entrypoint:
        if not cmd:
            cmd = list(image_config.get("Cmd") or [])
        if entrypoint is None:
            entrypoint = image_config.get("Entrypoint")
    entrypoint = list(entrypoint or [])
    if entrypoint == [""]:
        entrypoint = []
    args = entrypoint + cmd
    if not args:
        raise InvalidArgument("No command specified")
    return [str(arg) for arg in args]


def _env_key(entry: str) -> str:
    return entry.partition("=")[0]


def _check_env(env: Iterable[str]) -> list[str]:
    checked = []
    for entry in env or ():
        if not isinstance(entry, str) or _env_key(entry) == "":
            raise InvalidArgument(f"invalid environment variable: {entry}")
        checked.append(entry)
    return checked


def merge_env(image_env: Iterable[str], create_env: Iterable[str]) -> list[str]:
    """The container's Config.Env: the request's variables, then the image's that it does not set."""
    create_list = _check_env(create_env)
    image_list = _check_env(image_env)
    if not create_list:
        return image_list
    keys = {_env_key(entry) for entry in create_list}
    return create_list + [entry for entry in image_list if _env_key(entry) not in keys]


def replace_or_append_env(defaults: Iterable[str], overrides: Iterable[str]) -> list[str]:
    """*overrides* replace same-key entries of *defaults* or are appended; a bare ``KEY`` unsets KEY."""
    result = list(defaults)
    index = {_env_key(entry): i for i, entry in enumerate(result)}
    removed: set[int] = set()
    for entry in overrides:
        key, has_value, _ = entry.partition("=")
        if not has_value:
            if key in index:
                removed.add(index[key])
            continue
        if key in index:
            result[index[key]] = entry
            removed.discard(index[key])
        else:
            index[key] = len(result)
            result.append(entry)
    return [entry for i, entry in enumerate(result) if i not in removed]


def container_env(image_config: dict, create: dict, hostname: str) -> list[str]:
    """The process environment: Docker's PATH/HOSTNAME/TERM, overridden by image and request Env."""
    base = [f"PATH={DEFAULT_PATH}", f"HOSTNAME={hostname}"]
    if create.get("Tty"):
        base.append("TERM=xterm")
    merged = merge_env(image_config.get("Env") or [], create.get("Env") or [])
    return replace_or_append_env(base, merged)


def _working_dir(value: str | None) -> str:
    if not value:
        return "/"
    if not value.startswith("/"):
        raise InvalidArgument(f"the working directory '{value}' is invalid, it needs to be an absolute path")
    return posixpath.normpath(value)


def normalize_capability(name: str) -> str:
    """``net_admin``, ``CAP_NET_ADMIN`` -> ``CAP_NET_ADMIN``; ``all`` -> ``ALL``; unknown names refused."""
    upper = str(name).strip().upper()
    if upper == "ALL":
        return upper
    if not upper.startswith("CAP_"):
        upper = "CAP_" + upper
    if upper not in _CAP_ORDER:
        raise InvalidArgument(f"unknown capability: {upper}")
    return upper


def _host_caps(host: HostFacts) -> set[str]:
    return {normalize_capability(cap) for cap in host.capabilities if str(cap).upper() != "ALL"}


def container_capabilities(host_config: dict, host: HostFacts) -> list[str]:
    """Docker's capability set for the container (defaults, CapAdd, CapDrop, Privileged) within the host's.

    A capability named in CapAdd that the daemon does not hold is an error: the
    user asked for something this host cannot give. Any other capability the
    daemon lacks (from the defaults, ``ALL`` or ``--privileged``) is left out.
    """
    available = _host_caps(host)
    if host_config.get("Privileged"):
        wanted: Iterable[str] = CAPABILITIES
    else:
        adds = [normalize_capability(cap) for cap in host_config.get("CapAdd") or []]
        drops = [normalize_capability(cap) for cap in host_config.get("CapDrop") or []]
        for cap in adds:
            if cap != "ALL" and cap not in available:
                raise InvalidArgument(
                    f"capability {cap} is not available on this host (the daemon's bounding set lacks it)"
                )
        if "ALL" in adds:
            wanted = [cap for cap in CAPABILITIES if cap not in drops]
        elif "ALL" in drops:
            wanted = [cap for cap in adds if cap != "ALL"]
        else:
            wanted = [cap for cap in DEFAULT_CAPABILITIES if cap not in drops] + adds
    return sorted({cap for cap in wanted if cap in available}, key=_CAP_ORDER.__getitem__)


def _capabilities_object(caps: Sequence[str]) -> dict:
    return {
        "bounding": list(caps),
        "effective": list(caps),
        "permitted": list(caps),
        "inheritable": [],
        "ambient": [],
    }


def _limit_value(value: object, name: str) -> int:
    try:
        number = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise InvalidArgument(f"invalid ulimit {name}: {value!r} is not a number") from None
    if number == -1:
        return RLIM_INFINITY
    if number < 0:
        raise InvalidArgument(f"invalid ulimit {name}: {number} (use -1 for unlimited)")
    return number


def container_rlimits(host_config: dict, host: HostFacts) -> list[dict]:
    """The OCI rlimits: what HostConfig.Ulimits asks, plus a nofile limit the host can give.

    Docker sets no rlimit of its own, so containers inherit dockerd's (often
    1048576 open files). Here the daemon's own hard limit may be lower, and a
    runtime asked for more than that fails the container with EPERM; so the
    default is ``min(1048576, hard limit)``, and an explicit ulimit above the
    daemon's hard limit is refused with its name (unless the daemon holds
    CAP_SYS_RESOURCE, which lets the runtime raise hard limits).
    """
    can_raise = "CAP_SYS_RESOURCE" in _host_caps(host)
    requested: dict[str, dict] = {}
    for ulimit in host_config.get("Ulimits") or []:
        name = str(ulimit.get("Name", "")).strip().lower()
        if name not in ULIMITS:
            raise InvalidArgument(f"invalid ulimit type: {name}")
        soft = _limit_value(ulimit.get("Soft", 0), name)
        hard = _limit_value(ulimit.get("Hard", 0), name)
        if soft > hard:
            raise InvalidArgument(
                f"ulimit soft limit must be less than or equal to hard limit: {name}={soft}:{hard}"
            )
        oci_type = ULIMITS[name]
        limit = host.hard_limit(oci_type)
        if limit is not None and hard > limit and not can_raise:
            shown = "unlimited" if hard == RLIM_INFINITY else str(hard)
            raise InvalidArgument(
                f"ulimit {name} ({oci_type}): hard limit {shown} is above this host's hard limit {limit} "
                "(the daemon cannot raise it)"
            )
        requested[oci_type] = {"type": oci_type, "hard": hard, "soft": soft}
    if "RLIMIT_NOFILE" not in requested:
        nofile = min(MAX_DEFAULT_NOFILE, host.nofile_hard)
        requested = {"RLIMIT_NOFILE": {"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile}, **requested}
    return list(requested.values())


# --- security options ----------------------------------------------------------------------------


@dataclass
class SecurityOptions:
    """HostConfig.SecurityOpt, parsed the way dockerd reads it."""

    seccomp: str = ""
    """"" (default profile), "unconfined", "builtin", a JSON profile, or a path to one."""
    no_new_privileges: bool = False
    unconfined_systempaths: bool = False
    writable_cgroups: bool | None = None


def _bool_option(key: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "t", "true"):
        return True
    if lowered in ("0", "f", "false"):
        return False
    raise InvalidArgument(f"invalid --security-opt {key}: {value!r}")


def parse_security_options(options: Iterable[str]) -> SecurityOptions:
    """Docker's --security-opt values (``key=value``, or the legacy ``key:value``)."""
    parsed = SecurityOptions()
    for option in options or ():
        if option == "no-new-privileges":
            parsed.no_new_privileges = True
            continue
        if option == "disable":  # legacy "label:disable" spelled bare
            continue
        key, sep, value = option.partition("=")
        if not sep:
            key, sep, value = option.partition(":")
        if not sep:
            raise InvalidArgument(f"invalid --security-opt: {option!r}")
        if key == "seccomp":
            parsed.seccomp = value
        elif key == "no-new-privileges":
            parsed.no_new_privileges = _bool_option(key, value)
        elif key == "systempaths":
            if value != "unconfined":
                raise InvalidArgument(f"invalid --security-opt systempaths: {value!r} (only 'unconfined')")
            parsed.unconfined_systempaths = True
        elif key == "writable-cgroups":
            parsed.writable_cgroups = _bool_option(key, value)
        elif key in ("label", "apparmor"):
            pass  # no SELinux or AppArmor on kapal's hosts: accepted, as dockerd does when they are off
        else:
            raise InvalidArgument(f"invalid --security-opt: {option!r}")
    return parsed


def _seccomp(security: SecurityOptions, privileged: bool, caps: Sequence[str]) -> dict | None:
    value = security.seccomp.strip()
    if value == "unconfined":
        return None
    if value in ("", "builtin"):
        if privileged:
            return None  # Docker: privileged containers get no default filter
        profile = seccomp.default_profile()
    elif value.startswith("{"):
        profile = seccomp.parse_profile(value, "--security-opt seccomp")
    else:
        profile = seccomp.load_profile(value)
    return seccomp.to_oci(profile, caps) or None


# --- mounts ----------------------------------------------------------------------------------------


def default_mounts(shm_size: int) -> list[dict]:
    """Docker's default filesystem mounts; /sys and the cgroup tree read-only."""
    return [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        },
        {
            "destination": "/sys",
            "type": "sysfs",
            "source": "sysfs",
            "options": ["nosuid", "noexec", "nodev", "ro"],
        },
        {
            "destination": "/sys/fs/cgroup",
            "type": "cgroup",
            "source": "cgroup",
            "options": ["ro", "nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/dev/mqueue",
            "type": "mqueue",
            "source": "mqueue",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", f"size={shm_size}"],
        },
    ]


# Mount flags that cancel each other: the later one given wins (as mount(8) reads options).
_FLAG_FAMILIES = {
    flag: family
    for family, flags in {
        "exec": ("exec", "noexec"),
        "suid": ("suid", "nosuid"),
        "dev": ("dev", "nodev"),
        "rw": ("ro", "rw"),
        "atime": ("atime", "noatime", "relatime", "norelatime", "strictatime", "nostrictatime"),
        "diratime": ("diratime", "nodiratime"),
        "sync": ("sync", "async"),
        "propagation": (
            "private",
            "rprivate",
            "shared",
            "rshared",
            "slave",
            "rslave",
            "unbindable",
            "runbindable",
        ),
    }.items()
    for flag in flags
}


def merge_mount_options(options: Iterable[str]) -> list[str]:
    """Options with later ones overriding earlier ones of the same flag family or ``key=``."""
    latest: dict[str, str] = {}
    for option in options:
        option = option.strip()
        if not option:
            continue
        key = _FLAG_FAMILIES.get(option) or (option.split("=", 1)[0] if "=" in option else option)
        latest.pop(key, None)  # keep insertion order of the winning value
        latest[key] = option
    return list(latest.values())


def _clean_destination(path: str) -> str:
    if not isinstance(path, str) or not path.startswith("/"):
        raise InvalidArgument(f"invalid mount destination {path!r}: it needs to be an absolute path")
    return posixpath.normpath(path).replace("//", "/")


def _depth(destination: str) -> int:
    return len([part for part in destination.split("/") if part])


def container_mounts(
    host_config: dict,
    etc_files: dict[str, str],
    mounts: Iterable[dict],
    readonly_root: bool,
    privileged: bool,
    writable_cgroups: bool,
) -> list[dict]:
    """Docker's default mounts, then the container's own (etc files, tmpfs, the caller's) by depth.

    A container mount replaces a default at the same destination, and one at
    /dev replaces every default under /dev. Among the container's own, the
    caller's mounts win over --tmpfs, which wins over the etc files Docker
    would otherwise put there; they are ordered parent-first so a mount at
    /a/b is not hidden by a later one at /a.
    """
    ipc_mode = str(host_config.get("IpcMode") or "")
    shm_size = int(host_config.get("ShmSize") or 0) or DEFAULT_SHM_SIZE
    if shm_size < 0:
        raise InvalidArgument("SHM size can not be less than 0")

    own: dict[str, dict] = {}
    for destination, source in (etc_files or {}).items():
        own[_clean_destination(destination)] = {
            "destination": _clean_destination(destination),
            "type": "bind",
            "source": source,
            "options": ["rbind", "rprivate"],
        }
    if ipc_mode == "host":
        own["/dev/shm"] = {
            "destination": "/dev/shm",
            "type": "bind",
            "source": "/dev/shm",
            "options": ["rbind", "rprivate"],
        }
    for destination, data in (host_config.get("Tmpfs") or {}).items():
        clean = _clean_destination(destination)
        user_options = [opt for opt in str(data or "").split(",") if opt]
        own[clean] = {
            "destination": clean,
            "type": "tmpfs",
            "source": "tmpfs",
            "options": merge_mount_options(["noexec", "nosuid", "nodev", "rprivate", *user_options]),
        }
    for mount in mounts or ():
        clean = _clean_destination(mount.get("destination", ""))
        entry = copy.deepcopy(dict(mount))
        entry["destination"] = clean
        own.pop(clean, None)
        own[clean] = entry

    replaced_dev = "/dev" in own
    result = []
    for mount in default_mounts(shm_size):
        destination = mount["destination"]
        if destination in own:
            continue
        if replaced_dev and destination.startswith("/dev/"):
            continue
        if destination == "/dev/shm" and ipc_mode == "none":
            continue
        result.append(mount)

    if readonly_root:
        for mount in result:
            exempt = mount["destination"] in ("/proc", "/dev/pts", "/dev/shm", "/dev/mqueue", "/dev")
            if not exempt and "ro" not in mount["options"]:
                mount["options"].append("ro")
    for mount in result:
        if (privileged and mount["destination"] == "/sys") or (
            writable_cgroups and mount["type"] == "cgroup"
        ):
            mount["options"] = [opt for opt in mount["options"] if opt != "ro"]

    result.extend(sorted(own.values(), key=lambda m: _depth(m["destination"])))
    return result


# --- namespaces, devices, resources ----------------------------------------------------------------


def _joined(mode: str, kind: str) -> str:
    """The namespace path of ``container:/proc/<pid>/ns/<kind>``; the caller resolves container names."""
    target = mode.partition(":")[2]
    if not target.startswith("/"):
        raise InvalidArgument(
            f"{kind} mode {mode!r}: the container must be resolved to a namespace path "
            "(container:/proc/PID/ns/…)"
        )
    return target


def container_namespaces(host_config: dict, cgroup_version: int) -> list[dict]:
    """New pid/ipc/uts/mount/network namespaces, except those the modes share with the host."""
    namespaces: list[dict] = [{"type": "mount"}]

    def add(kind: str, mode: str, label: str, allowed: tuple[str, ...]) -> None:
        if mode == "host":
            return
        if mode.startswith("container:"):
            namespaces.append({"type": kind, "path": _joined(mode, label)})
            return
        if mode not in allowed:
            raise InvalidArgument(f"invalid {label} mode: {mode}")
        namespaces.append({"type": kind})

    network = str(host_config.get("NetworkMode") or "")
    if network == "host" or network.startswith("container:"):
        add("network", network, "network", ())
    else:
        namespaces.append({"type": "network"})  # bridge, none, default, user-defined networks
    add("ipc", str(host_config.get("IpcMode") or ""), "IPC", ("", "private", "shareable", "none"))
    add("pid", str(host_config.get("PidMode") or ""), "PID", ("", "private"))
    add("uts", str(host_config.get("UTSMode") or ""), "UTS", ("", "private"))
    cgroupns = str(host_config.get("CgroupnsMode") or "")
    if cgroupns not in ("", "private", "host"):
        raise InvalidArgument(f"invalid cgroup namespace mode: {cgroupns}")
    if cgroupns == "private" or (cgroupns == "" and cgroup_version == 2):
        namespaces.append({"type": "cgroup"})
    return namespaces


def _device_rule(allow: bool, kind: str | None, major: int | None, minor: int | None, access: str) -> dict:
    rule: dict = {"allow": allow}
    if kind:
        rule["type"] = kind
    if major is not None:
        rule["major"] = major
    if minor is not None:
        rule["minor"] = minor
    rule["access"] = access
    return rule


def default_device_rules() -> list[dict]:
    """The device cgroup: deny everything, allow mknod of any node, and the few devices a container uses."""
    rules = [
        _device_rule(False, None, None, None, "rwm"),
        _device_rule(True, "c", None, None, "m"),
        _device_rule(True, "b", None, None, "m"),
    ]
    rules += [_device_rule(True, kind, major, minor, "rwm") for kind, major, minor in _ALLOWED_DEVICES]
    return rules


def default_devices() -> list[dict]:
    return [
        {
            "path": f"/dev/{name}",
            "type": "c",
            "major": major,
            "minor": minor,
            "fileMode": 0o666,
            "uid": 0,
            "gid": 0,
        }
        for name, major, minor in _DEFAULT_DEVICE_NODES
    ]


def _device_node(host_path: str, container_path: str, info: os.stat_result) -> dict:
    return {
        "path": container_path,
        "type": "c" if stat.S_ISCHR(info.st_mode) else "b",
        "major": os.major(info.st_rdev),
        "minor": os.minor(info.st_rdev),
        "fileMode": stat.S_IMODE(info.st_mode),
        "uid": info.st_uid,
        "gid": info.st_gid,
    }


def _is_device(info: os.stat_result) -> bool:
    return stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode)


def devices_from_path(path_on_host: str, path_in_container: str, permissions: str) -> list[dict]:
    """Device nodes for ``--device HOST[:CONTAINER[:PERMS]]``; a directory adds the devices under it."""
    if not permissions or any(char not in "rwm" for char in permissions):
        raise InvalidArgument(f"invalid device cgroup permissions {permissions!r} for {path_on_host}")
    resolved = os.path.realpath(path_on_host)
    problem = f"error gathering device information while adding custom device {path_on_host!r}"
    try:
        info = os.stat(resolved)
    except OSError as error:
        raise InvalidArgument(f"{problem}: {error.strerror}") from None
    if _is_device(info):
        return [_device_node(resolved, path_in_container, info)]
    if not stat.S_ISDIR(info.st_mode):
        raise InvalidArgument(f"{problem}: not a device node")
    found = []
    for directory, _subdirs, files in os.walk(resolved):
        for name in sorted(files):
            host_path = os.path.join(directory, name)
            try:
                node = os.lstat(host_path)
            except OSError:
                continue
            if _is_device(node):
                inside = posixpath.join(path_in_container, os.path.relpath(host_path, resolved))
                found.append(_device_node(host_path, inside, node))
    return found


def host_devices(root: str = "/dev") -> list[dict]:
    """Every device node on the host (a privileged container sees the host's /dev, as in Docker)."""
    found = []

    def walk(directory: str) -> None:
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                if entry.name not in _SKIPPED_HOST_DEV_DIRS:
                    walk(entry.path)
                continue
            if entry.path == "/dev/console":
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if _is_device(info):
                found.append(_device_node(entry.path, entry.path, info))

    walk(root)
    return found


def container_devices(host_config: dict, privileged: bool) -> tuple[list[dict], list[dict]]:
    """(linux.devices, linux.resources.devices) for the container."""
    devices = default_devices()
    rules = default_device_rules()
    if privileged:
        devices += host_devices()
        rules = [_device_rule(True, None, None, None, "rwm")]
    for mapping in host_config.get("Devices") or []:
        on_host = mapping.get("PathOnHost") or ""
        in_container = mapping.get("PathInContainer") or on_host
        permissions = mapping.get("CgroupPermissions") or "rwm"
        nodes = devices_from_path(on_host, in_container, "rwm" if privileged else permissions)
        devices += nodes
        if not privileged:
            rules += [
                _device_rule(True, node["type"], node["major"], node["minor"], permissions) for node in nodes
            ]
    if not privileged:
        for text in host_config.get("DeviceCgroupRules") or []:
            rules.append(_parse_cgroup_rule(text))
    by_path: dict[str, dict] = {}
    for device in devices:
        by_path[device["path"]] = device
    return list(by_path.values()), rules


def _parse_cgroup_rule(text: str) -> dict:
    """``c 1:3 rwm`` / ``a *:* rwm`` (--device-cgroup-rule) as an OCI device rule."""
    parts = str(text).split()
    try:
        kind, numbers, access = parts
        major_text, minor_text = numbers.split(":")
        major = None if major_text == "*" else int(major_text)
        minor = None if minor_text == "*" else int(minor_text)
    except ValueError:
        raise InvalidArgument(f"invalid device cgroup rule format: {text!r}") from None
    if kind not in ("a", "b", "c") or not access or any(char not in "rwm" for char in access):
        raise InvalidArgument(f"invalid device cgroup rule format: {text!r}")
    return _device_rule(True, kind, major, minor, access)


def _int(host_config: dict, key: str) -> int:
    value = host_config.get(key)
    if value is None:
        return 0
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InvalidArgument(f"invalid {key}: {value!r}") from None


def container_resources(host_config: dict, devices: list[dict]) -> dict:
    """linux.resources from HostConfig, with dockerd's validation of the combinations."""
    resources: dict = {"devices": devices}

    memory: dict = {}
    limit = _int(host_config, "Memory")
    swap = _int(host_config, "MemorySwap")
    reservation = _int(host_config, "MemoryReservation")
    if limit < 0:
        raise InvalidArgument("invalid Memory: it must not be negative")
    if 0 < limit < 6 * 1024 * 1024:
        raise InvalidArgument("Minimum memory limit allowed is 6MB")
    if limit > 0:
        memory["limit"] = limit
    if swap > 0 or swap < -1:
        if limit == 0:
            raise InvalidArgument("You should always set the Memory limit when using Memoryswap limit")
        if swap < limit:
            raise InvalidArgument("Minimum memoryswap limit should be larger than memory limit")
        memory["swap"] = swap
    elif swap == 0 and limit > 0:
        memory["swap"] = limit * 2  # Docker's default: as much swap as memory
    if reservation > 0:
        if limit and reservation > limit:
            raise InvalidArgument("Minimum memory limit can not be less than memory reservation limit")
        memory["reservation"] = reservation
    swappiness = host_config.get("MemorySwappiness")
    if swappiness is not None and int(swappiness) != -1:
        if not 0 <= int(swappiness) <= 100:
            raise InvalidArgument(f"Invalid value: {swappiness}, valid memory swappiness range is 0-100")
        memory["swappiness"] = int(swappiness)
    if host_config.get("OomKillDisable") is not None:
        memory["disableOOMKiller"] = bool(host_config["OomKillDisable"])
    if memory:
        resources["memory"] = memory

    cpu: dict = {}
    shares = _int(host_config, "CpuShares")
    if shares < 0:
        raise InvalidArgument(f"invalid CPU shares ({shares}): value must be a positive integer")
    if shares:
        cpu["shares"] = shares
    nano = _int(host_config, "NanoCpus")
    period = _int(host_config, "CpuPeriod")
    quota = _int(host_config, "CpuQuota")
    if nano and (period or quota):
        raise InvalidArgument("Conflicting options: Nano CPUs and CPU Period/Quota cannot both be set")
    if nano < 0:
        raise InvalidArgument("Range of CPUs is from 0.01 to the number of CPUs available")
    if nano:
        cpu["period"] = 100000
        cpu["quota"] = nano * 100000 // 1_000_000_000
    if period:
        if not 1000 <= period <= 1_000_000:
            raise InvalidArgument("CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s")
        cpu["period"] = period
    if quota:
        if 0 < quota < 1000:
            raise InvalidArgument("CPU cfs quota can not be less than 1ms (i.e. 1000)")
        cpu["quota"] = quota
    if host_config.get("CpusetCpus"):
        cpu["cpus"] = str(host_config["CpusetCpus"])
    if host_config.get("CpusetMems"):
        cpu["mems"] = str(host_config["CpusetMems"])
    if cpu:
        resources["cpu"] = cpu

    pids = host_config.get("PidsLimit")
    # 0 and -1 mean unlimited: say nothing (crun 1.8 writes a literal -1 to v1's pids.max, which fails).
    if pids is not None and int(pids) > 0:
        resources["pids"] = {"limit": int(pids)}

    weight = _int(host_config, "BlkioWeight")
    if weight:
        if not 10 <= weight <= 1000:
            raise InvalidArgument("Range of blkio weight is from 10 to 1000")
        resources["blockIO"] = {"weight": weight}
    return resources


def _running_in_user_namespace() -> bool:
    try:
        with open("/proc/self/uid_map") as uid_map:
            return uid_map.read().split() != ["0", "0", "4294967295"]
    except OSError:
        return False


def container_sysctls(host_config: dict, new_netns: bool) -> dict[str, str]:
    """Docker's network sysctls for a private netns, then HostConfig.Sysctls (namespaced ones only)."""
    sysctls: dict[str, str] = {}
    if new_netns:
        if not _running_in_user_namespace() and os.path.exists("/proc/sys/net/ipv4/ping_group_range"):
            sysctls["net.ipv4.ping_group_range"] = "0 2147483647"  # ping without CAP_NET_RAW
        if os.path.exists("/proc/sys/net/ipv4/ip_unprivileged_port_start"):
            sysctls["net.ipv4.ip_unprivileged_port_start"] = "0"  # low ports without CAP_NET_BIND_SERVICE
    ipc_host = str(host_config.get("IpcMode") or "") == "host"
    for key, value in (host_config.get("Sysctls") or {}).items():
        if key in _IPC_SYSCTLS or key.startswith("fs.mqueue."):
            if ipc_host:
                raise InvalidArgument(f"sysctl {key!r} is not allowed when sharing the host's IPC namespace")
        elif key.startswith("net."):
            if not new_netns:
                raise InvalidArgument(f"sysctl {key!r} is not allowed in the host's network namespace")
        elif key not in ("kernel.domainname",):
            raise InvalidArgument(f"sysctl {key!r} is not allowed: it is not namespaced")
        sysctls[key] = str(value)
    return sysctls


def masked_paths() -> list[str]:
    """Docker's masked paths, plus each possible CPU's thermal_throttle directory where it exists."""
    paths = list(MASKED_PATHS)
    try:
        with open("/sys/devices/system/cpu/possible") as possible:
            ranges = possible.read().strip()
    except OSError:
        ranges = ""
    for part in filter(None, ranges.split(",")):
        first, _, last = part.partition("-")
        for cpu in range(int(first), int(last or first) + 1):
            path = f"/sys/devices/system/cpu/cpu{cpu}/thermal_throttle"
            if os.path.exists(path):
                paths.append(path)
    return paths


# --- the spec ------------------------------------------------------------------------------------


def _console_size(value: object) -> dict | None:
    if isinstance(value, list | tuple) and len(value) == 2 and all(value):
        return {"height": int(value[0]), "width": int(value[1])}
    return None


def _hostname(create: dict, container_id: str, host_config: dict) -> str:
    if create.get("Hostname"):
        return str(create["Hostname"])
    if str(host_config.get("NetworkMode") or "") == "host" or str(host_config.get("UTSMode") or "") == "host":
        return socket.gethostname()
    return container_id[:12]


def build_spec(
    image_config: dict,
    create: dict,
    rootfs: str,
    container_dir: str,
    container_id: str,
    etc_files: dict[str, str],
    host: HostFacts,
    cgroups_path: str,
    mounts: Sequence[dict] = (),
) -> dict:
    """The OCI ``config.json`` Docker would write for this container, within what *host* allows.

    *mounts* are the caller's resolved volume and bind mounts (OCI shape).
    The working directory is created in the rootfs if missing (as dockerd
    does; runc would fail to chdir). Nothing else is written: *container_dir*
    is accepted for callers that keep per-container files there.
    """
    del container_dir  # nothing of ours needs to live there (yet)
    image_config = image_config or {}
    host_config = create.get("HostConfig") or {}
    privileged = bool(host_config.get("Privileged"))
    security = parse_security_options(host_config.get("SecurityOpt") or [])
    readonly_root = bool(host_config.get("ReadonlyRootfs"))

    hostname = _hostname(create, container_id, host_config)
    args = process_args(image_config, create)
    cwd = _working_dir(create.get("WorkingDir") or image_config.get("WorkingDir"))
    if cwd != "/":
        mkdir_in_root(rootfs, cwd)
    user = resolve_user(
        rootfs, str(create.get("User") or image_config.get("User") or ""), host_config.get("GroupAdd") or []
    )
    caps = container_capabilities(host_config, host)

    oom_score_adj = _int(host_config, "OomScoreAdj")
    if not -1000 <= oom_score_adj <= 1000:
        raise InvalidArgument(f"Invalid value {oom_score_adj}, range for oom score adj is [-1000, 1000]")

    process: dict = {
        "terminal": bool(create.get("Tty")),
        "user": user.oci(),
        "args": args,
        "env": container_env(image_config, create, hostname),
        "cwd": cwd,
        "capabilities": _capabilities_object(caps),
        "rlimits": container_rlimits(host_config, host),
        "noNewPrivileges": security.no_new_privileges,
        "oomScoreAdj": oom_score_adj,
    }
    console = _console_size(host_config.get("ConsoleSize"))
    if process["terminal"] and console:
        process["consoleSize"] = console

    namespaces = container_namespaces(host_config, host.cgroup_version)
    new_netns = any(ns["type"] == "network" and "path" not in ns for ns in namespaces)
    devices, device_rules = container_devices(host_config, privileged)
    writable_cgroups = privileged if security.writable_cgroups is None else security.writable_cgroups

    linux: dict = {
        "namespaces": namespaces,
        "cgroupsPath": cgroups_path,
        "resources": container_resources(host_config, device_rules),
        "devices": devices,
        "sysctl": container_sysctls(host_config, new_netns),
    }
    if not privileged and not security.unconfined_systempaths:
        linux["maskedPaths"] = masked_paths()
        linux["readonlyPaths"] = list(READONLY_PATHS)
    if host_config.get("MaskedPaths") is not None:
        linux["maskedPaths"] = list(host_config["MaskedPaths"])
    if host_config.get("ReadonlyPaths") is not None:
        linux["readonlyPaths"] = list(host_config["ReadonlyPaths"])
    profile = _seccomp(security, privileged, caps)
    if profile:
        linux["seccomp"] = profile

    spec: dict = {
        "ociVersion": OCI_VERSION,
        "process": process,
        "root": {"path": rootfs, "readonly": readonly_root},
        "mounts": container_mounts(
            host_config, etc_files, mounts, readonly_root, privileged, writable_cgroups
        ),
        "linux": linux,
    }
    if any(ns["type"] == "uts" for ns in namespaces):
        spec["hostname"] = hostname
        if create.get("Domainname"):
            spec["domainname"] = str(create["Domainname"])
    return spec


def exec_process(
    spec: dict, exec_config: dict, user: ResolvedUser | None, host: HostFacts | None = None
) -> dict:
    """The OCI ``process`` for ``docker exec``: the container's process with the exec's changes.

    Rlimits, noNewPrivileges and the like are inherited from the container
    (as dockerd does); Env is added to the container's environment;
    WorkingDir and User default to the container's. ``Privileged`` grants
    every capability the daemon holds (*host*, default: detected), not more.
    """
    cmd = [str(arg) for arg in exec_config.get("Cmd") or []]
    if not cmd:
        raise InvalidArgument("No exec command specified")
    process = copy.deepcopy(spec.get("process") or {})
    tty = bool(exec_config.get("Tty"))
    env = replace_or_append_env(process.get("env") or [], _check_env(exec_config.get("Env") or []))
    if tty and not any(_env_key(entry) == "TERM" for entry in env):
        env.append("TERM=xterm")
    process["args"] = cmd
    process["env"] = env
    process["terminal"] = tty
    process.pop("consoleSize", None)
    console = _console_size(exec_config.get("ConsoleSize"))
    if tty and console:
        process["consoleSize"] = console
    if exec_config.get("WorkingDir"):
        process["cwd"] = _working_dir(exec_config["WorkingDir"])
    process.setdefault("cwd", "/")
    if user is not None:
        process["user"] = user.oci()
    if exec_config.get("Privileged"):
        available = _host_caps(host) if host is not None else daemon_capabilities()
        process["capabilities"] = _capabilities_object(sorted(available, key=_CAP_ORDER.__getitem__))
    return process
