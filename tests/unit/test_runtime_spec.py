"""The OCI spec kapal builds: Docker's defaults and rules, clamped to what this host's daemon holds."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from kapal.errors import InvalidArgument
from kapal.runtime import seccomp, spec, users
from kapal.runtime.spec import (
    CAPABILITIES,
    DEFAULT_CAPABILITIES,
    DEFAULT_PATH,
    MASKED_PATHS,
    READONLY_PATHS,
    RLIM_INFINITY,
    HostFacts,
    build_spec,
    exec_process,
    process_args,
)
from kapal.runtime.users import ResolvedUser, resolve_user

CONTAINER_ID = "0123456789abcdef" * 4

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
# a comment line
app:x:1000:1000:app:/home/app:/bin/sh
svc:x:1001:50::/srv:/bin/sh
broken:x:notanumber:0::/:/bin/sh
"""
GROUP = """\
root:x:0:
staff:x:50:app
app:x:1000:
docker:x:999:app,svc
video:x:44:
"""


def host_facts(**changes: object) -> HostFacts:
    """This host as the brief describes it: no CAP_SYS_RESOURCE, 20000 open files, cgroup v1."""
    facts = HostFacts(
        capabilities=set(CAPABILITIES) - {"CAP_SYS_RESOURCE"},
        nofile_hard=20000,
        nproc_hard=96364,
        cgroup_version=1,
        hard_limits={"RLIMIT_CORE": RLIM_INFINITY, "RLIMIT_MEMLOCK": 8 * 1024 * 1024},
    )
    for key, value in changes.items():
        setattr(facts, key, value)
    return facts


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text(PASSWD)
    (root / "etc" / "group").write_text(GROUP)
    return root


def make_spec(rootfs: Path, create: dict | None = None, image: dict | None = None, **kwargs: object) -> dict:
    create = {"Cmd": ["sh"], **(create or {})}
    options: dict = {
        "etc_files": {"/etc/hosts": "/run/x/hosts", "/etc/hostname": "/run/x/hostname"},
        "host": host_facts(),
        "mounts": (),
    }
    options.update(kwargs)
    return build_spec(
        image or {},
        create,
        str(rootfs),
        str(rootfs.parent),
        CONTAINER_ID,
        options["etc_files"],
        options["host"],
        f"/kapal/{CONTAINER_ID}",
        options["mounts"],
    )


def host_config(rootfs: Path, **config: object) -> dict:
    return make_spec(rootfs, {"HostConfig": config})


# --- Entrypoint and Cmd ----------------------------------------------------------------------------

IMAGE = {"Entrypoint": ["/ep"], "Cmd": ["a"]}


@pytest.mark.parametrize(
    ("image", "create", "expected"),
    [
        ({"Cmd": ["sh"]}, {}, ["sh"]),
        ({"Cmd": ["sh"]}, {"Cmd": ["echo", "hi"]}, ["echo", "hi"]),
        ({"Cmd": ["sh"]}, {"Cmd": []}, ["sh"]),
        (IMAGE, {}, ["/ep", "a"]),
        (IMAGE, {"Cmd": ["b", "c"]}, ["/ep", "b", "c"]),
        (IMAGE, {"Entrypoint": ["/x"]}, ["/x"]),  # the image's Cmd was for the image's entrypoint
        (IMAGE, {"Entrypoint": ["/x"], "Cmd": ["y"]}, ["/x", "y"]),
        (IMAGE, {"Entrypoint": [""], "Cmd": ["ls"]}, ["ls"]),  # --entrypoint "" resets it
        (IMAGE, {"Entrypoint": []}, ["a"]),  # [] clears the entrypoint; dockerd then keeps the image's Cmd
        (IMAGE, {"Entrypoint": None}, ["/ep", "a"]),  # null is "not given"
        ({"Entrypoint": ["/ep"]}, {}, ["/ep"]),
        ({}, {"Entrypoint": ["/x", "-v"], "Cmd": ["z"]}, ["/x", "-v", "z"]),
    ],
)
def test_process_args_follows_dockers_entrypoint_cmd_matrix(
    image: dict, create: dict, expected: list
) -> None:
    assert process_args(image, create) == expected


@pytest.mark.parametrize(
    ("image", "create"),
    [({}, {}), ({"Cmd": []}, {"Cmd": []}), (IMAGE, {"Entrypoint": [""]}), ({"Entrypoint": [""]}, {})],
)
def test_process_args_without_a_command(image: dict, create: dict) -> None:
    with pytest.raises(InvalidArgument, match="No command specified"):
        process_args(image, create)


# --- environment -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image_env", "create", "expected"),
    [
        ([], {}, [f"PATH={DEFAULT_PATH}", "HOSTNAME=h"]),
        (["PATH=/img", "A=1"], {}, ["PATH=/img", "HOSTNAME=h", "A=1"]),
        (["PATH=/img", "A=1"], {"Env": ["A=2", "B=3"]}, ["PATH=/img", "HOSTNAME=h", "A=2", "B=3"]),
        (["A=1"], {"Tty": True}, [f"PATH={DEFAULT_PATH}", "HOSTNAME=h", "TERM=xterm", "A=1"]),
        ([], {"Tty": True, "Env": ["TERM=dumb"]}, [f"PATH={DEFAULT_PATH}", "HOSTNAME=h", "TERM=dumb"]),
        (["PATH=/img", "A=1"], {"Env": ["PATH"]}, ["HOSTNAME=h", "A=1"]),  # a bare key unsets it
        ([], {"Env": ["HOSTNAME=mine", "E="]}, [f"PATH={DEFAULT_PATH}", "HOSTNAME=mine", "E="]),
    ],
)
def test_environment(image_env: list, create: dict, expected: list) -> None:
    assert spec.container_env({"Env": image_env}, create, "h") == expected


def test_environment_in_the_spec_and_invalid_entries(rootfs: Path) -> None:
    env = make_spec(rootfs, {"Env": ["X=1"]}, {"Env": ["Y=2"]})["process"]["env"]
    assert env == [f"PATH={DEFAULT_PATH}", f"HOSTNAME={CONTAINER_ID[:12]}", "X=1", "Y=2"]
    with pytest.raises(InvalidArgument, match="invalid environment variable: =x"):
        make_spec(rootfs, {"Env": ["=x"]})


# --- users -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "group_add", "expected"),
    [
        ("", [], ResolvedUser(0, 0, [0], "/root")),
        ("root", [], ResolvedUser(0, 0, [0], "/root")),
        ("app", [], ResolvedUser(1000, 1000, [1000, 50, 999], "/home/app")),
        ("1000", [], ResolvedUser(1000, 1000, [1000, 50, 999], "/home/app")),
        ("app:video", [], ResolvedUser(1000, 44, [44], "/home/app")),  # explicit group: no implicit ones
        ("app:44", [], ResolvedUser(1000, 44, [44], "/home/app")),
        ("app:4242", [], ResolvedUser(1000, 4242, [4242], "/home/app")),
        ("4242", [], ResolvedUser(4242, 0, [0], "/")),
        ("4242:4343", [], ResolvedUser(4242, 4343, [4343], "/")),
        ("4242:video", [], ResolvedUser(4242, 44, [44], "/")),
        ("svc", ["video", "4000", "staff"], ResolvedUser(1001, 50, [50, 999, 44, 4000], "/srv")),
        ("", ["docker"], ResolvedUser(0, 0, [0, 999], "/root")),
    ],
)
def test_resolve_user(rootfs: Path, user: str, group_add: list, expected: ResolvedUser) -> None:
    assert resolve_user(str(rootfs), user, group_add) == expected


@pytest.mark.parametrize(
    ("user", "group_add", "message"),
    [
        ("nobody", [], "unable to find user nobody: no matching entries in passwd file"),
        ("broken", [], "unable to find user broken"),  # malformed lines are skipped, not read as uid 0
        ("app:nogroup", [], "unable to find group nogroup: no matching entries in group file"),
        ("app", ["nope"], "unable to find group nope"),
        ("-1", [], "uids and gids must be in range"),
        ("app:99999999999", [], "uids and gids must be in range"),
    ],
)
def test_resolve_user_errors(rootfs: Path, user: str, group_add: list, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        resolve_user(str(rootfs), user, group_add)


def test_missing_passwd_allows_numeric_ids_only(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert resolve_user(str(empty), "") == ResolvedUser(0, 0, [0], "/")
    assert resolve_user(str(empty), "123:456") == ResolvedUser(123, 456, [456], "/")
    with pytest.raises(InvalidArgument, match="unable to find user app"):
        resolve_user(str(empty), "app")


def host_secret(tmp_path: Path) -> Path:
    """A passwd-like file outside the rootfs that defines a user only the host knows."""
    secret = tmp_path / "host-shadow"
    secret.write_text("hostonly:x:0:0::/:/bin/sh\n")
    return secret


@pytest.mark.parametrize("relative", [False, True])
def test_passwd_symlink_cannot_reach_outside_the_rootfs(rootfs: Path, tmp_path: Path, relative: bool) -> None:
    secret = host_secret(tmp_path)
    passwd = rootfs / "etc" / "passwd"
    passwd.unlink()
    target = os.path.relpath(secret, passwd.parent) if relative else str(secret)
    passwd.symlink_to(target)
    assert os.path.exists(passwd)  # from the host the link does reach the secret
    with pytest.raises(InvalidArgument, match="unable to find user hostonly"):
        resolve_user(str(rootfs), "hostonly")


def test_etc_symlinked_to_a_host_directory_stays_in_the_rootfs(rootfs: Path, tmp_path: Path) -> None:
    host_etc = tmp_path / "host-etc"
    host_etc.mkdir()
    (host_etc / "passwd").write_text("hostonly:x:7:7::/:/bin/sh\n")
    (rootfs / "etc" / "passwd").rename(rootfs / "passwd.real")
    (rootfs / "etc" / "group").unlink()
    (rootfs / "etc").rmdir()
    (rootfs / "etc").symlink_to(str(host_etc))
    with pytest.raises(InvalidArgument, match="unable to find user hostonly"):
        resolve_user(str(rootfs), "hostonly")


def test_symlinks_inside_the_rootfs_are_followed(rootfs: Path) -> None:
    (rootfs / "data").mkdir()
    (rootfs / "etc" / "passwd").rename(rootfs / "data" / "passwd")
    (rootfs / "etc" / "passwd").symlink_to("../../../data/passwd")  # ".." stops at the rootfs
    (rootfs / "etc" / "group").rename(rootfs / "data" / "group")
    (rootfs / "etc" / "group").symlink_to("/data/group")  # absolute means the rootfs's /data
    assert resolve_user(str(rootfs), "app") == ResolvedUser(1000, 1000, [1000, 50, 999], "/home/app")


def test_symlink_loops_and_special_files(rootfs: Path) -> None:
    passwd = rootfs / "etc" / "passwd"
    passwd.unlink()
    passwd.symlink_to("passwd2")
    (rootfs / "etc" / "passwd2").symlink_to("passwd")
    with pytest.raises(InvalidArgument, match="symbolic links"):
        resolve_user(str(rootfs), "app")
    passwd.unlink()
    os.mkfifo(passwd)  # must not block the daemon: a FIFO is not a passwd file
    assert resolve_user(str(rootfs), "") == ResolvedUser(0, 0, [0], "/")
    with pytest.raises(InvalidArgument, match="unable to find user app"):
        resolve_user(str(rootfs), "app")


def test_oversized_passwd_is_refused(rootfs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(users, "MAX_ACCOUNT_FILE", 64)
    with pytest.raises(InvalidArgument, match="too large"):
        resolve_user(str(rootfs), "app")


def test_working_dir_is_created_inside_the_rootfs(rootfs: Path, tmp_path: Path) -> None:
    (rootfs / "work").symlink_to("../../outside")  # from the host: tmp_path/outside
    created = make_spec(rootfs, {"WorkingDir": "/work/sub/./dir/"})
    assert created["process"]["cwd"] == "/work/sub/dir"
    assert (rootfs / "outside" / "sub" / "dir").is_dir()
    assert not (tmp_path / "outside").exists()
    assert make_spec(rootfs, image={"WorkingDir": "/srv"})["process"]["cwd"] == "/srv"
    assert (rootfs / "srv").is_dir()
    with pytest.raises(InvalidArgument, match="needs to be an absolute path"):
        make_spec(rootfs, {"WorkingDir": "relative"})


def test_user_in_the_spec(rootfs: Path) -> None:
    process = make_spec(rootfs, {"User": "app", "HostConfig": {"GroupAdd": ["video"]}})["process"]
    assert process["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [1000, 50, 999, 44]}
    assert "umask" not in process["user"]
    image_user = make_spec(rootfs, image={"User": "svc"})["process"]["user"]
    assert image_user["uid"] == 1001


# --- capabilities ----------------------------------------------------------------------------------


def caps_of(created: dict) -> set[str]:
    capabilities = created["process"]["capabilities"]
    assert capabilities["bounding"] == capabilities["effective"] == capabilities["permitted"]
    assert capabilities["inheritable"] == [] and capabilities["ambient"] == []
    return set(capabilities["bounding"])


ALL_ON_HOST = set(CAPABILITIES) - {"CAP_SYS_RESOURCE"}


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({}, set(DEFAULT_CAPABILITIES)),
        (
            {"CapAdd": ["net_admin", "CAP_SYS_ADMIN"]},
            set(DEFAULT_CAPABILITIES) | {"CAP_NET_ADMIN", "CAP_SYS_ADMIN"},
        ),
        ({"CapDrop": ["chown", "CAP_KILL"]}, set(DEFAULT_CAPABILITIES) - {"CAP_CHOWN", "CAP_KILL"}),
        ({"CapAdd": ["ALL"]}, ALL_ON_HOST),
        ({"CapAdd": ["all"], "CapDrop": ["NET_ADMIN"]}, ALL_ON_HOST - {"CAP_NET_ADMIN"}),
        ({"CapDrop": ["ALL"], "CapAdd": ["chown"]}, {"CAP_CHOWN"}),
        ({"CapDrop": ["ALL"]}, set()),
        ({"Privileged": True}, ALL_ON_HOST),
        ({"Privileged": True, "CapDrop": ["ALL"]}, ALL_ON_HOST),  # as dockerd: privileged ignores them
    ],
)
def test_capabilities(rootfs: Path, config: dict, expected: set) -> None:
    assert caps_of(host_config(rootfs, **config)) == expected


def test_capabilities_the_daemon_lacks_are_dropped_silently(rootfs: Path) -> None:
    host = host_facts(capabilities={"CAP_CHOWN", "CAP_KILL", "CAP_SYS_ADMIN"})
    assert caps_of(make_spec(rootfs, host=host)) == {"CAP_CHOWN", "CAP_KILL"}
    assert caps_of(make_spec(rootfs, {"HostConfig": {"Privileged": True}}, host=host)) == host.capabilities


def test_explicit_cap_add_of_a_missing_capability_is_refused(rootfs: Path) -> None:
    message = (
        r"capability CAP_SYS_RESOURCE is not available on this host \(the daemon's bounding set lacks it\)"
    )
    with pytest.raises(InvalidArgument, match=message):
        host_config(rootfs, CapAdd=["sys_resource"])
    with pytest.raises(InvalidArgument, match="unknown capability: CAP_FOO"):
        host_config(rootfs, CapAdd=["foo"])
    with pytest.raises(InvalidArgument, match="unknown capability: CAP_BAR"):
        host_config(rootfs, CapDrop=["CAP_BAR"])


def test_host_facts_detect_reads_the_bounding_set() -> None:
    facts = HostFacts.detect()
    assert facts.cgroup_version in (1, 2)
    assert facts.nofile_hard > 0 and facts.nproc_hard > 0
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("CapBnd:"))
    assert facts.capabilities == spec.capabilities_from_mask(int(line.split()[1], 16))
    assert spec.capabilities_from_mask(0x1FFFEFFFFFF) == ALL_ON_HOST


# --- rlimits ---------------------------------------------------------------------------------------


def rlimits(rootfs: Path, ulimits: list | None = None, **host: object) -> list[dict]:
    create = {"HostConfig": {"Ulimits": ulimits}} if ulimits is not None else {}
    return make_spec(rootfs, create, host=host_facts(**host))["process"]["rlimits"]


def test_default_nofile_is_clamped_to_the_hosts_hard_limit(rootfs: Path) -> None:
    assert rlimits(rootfs) == [{"type": "RLIMIT_NOFILE", "hard": 20000, "soft": 20000}]
    assert rlimits(rootfs, nofile_hard=4_000_000) == [
        {"type": "RLIMIT_NOFILE", "hard": 1048576, "soft": 1048576}
    ]


def test_explicit_ulimits(rootfs: Path) -> None:
    got = rlimits(
        rootfs,
        [{"Name": "nofile", "Soft": 1024, "Hard": 4096}, {"Name": "core", "Soft": -1, "Hard": -1}],
    )
    assert got == [
        {"type": "RLIMIT_NOFILE", "hard": 4096, "soft": 1024},
        {"type": "RLIMIT_CORE", "hard": RLIM_INFINITY, "soft": RLIM_INFINITY},
    ]
    nproc = rlimits(rootfs, [{"Name": "nproc", "Soft": 100, "Hard": 200}])
    assert nproc == [
        {"type": "RLIMIT_NOFILE", "hard": 20000, "soft": 20000},
        {"type": "RLIMIT_NPROC", "hard": 200, "soft": 100},
    ]


@pytest.mark.parametrize(
    ("ulimit", "message"),
    [
        (
            {"Name": "nofile", "Soft": 1024, "Hard": 30000},
            r"nofile \(RLIMIT_NOFILE\): hard limit 30000 .* 20000",
        ),
        ({"Name": "nofile", "Soft": -1, "Hard": -1}, r"nofile .*unlimited"),
        ({"Name": "nproc", "Soft": 1, "Hard": 100000}, r"nproc \(RLIMIT_NPROC\)"),
        ({"Name": "memlock", "Soft": 1, "Hard": -1}, r"memlock \(RLIMIT_MEMLOCK\)"),
        (
            {"Name": "nofile", "Soft": 2000, "Hard": 1000},
            "soft limit must be less than or equal to hard limit",
        ),
        ({"Name": "bogus", "Soft": 1, "Hard": 1}, "invalid ulimit type: bogus"),
    ],
)
def test_ulimit_errors(rootfs: Path, ulimit: dict, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        rlimits(rootfs, [ulimit])


def test_a_daemon_with_cap_sys_resource_may_raise_hard_limits(rootfs: Path) -> None:
    got = rlimits(rootfs, [{"Name": "nofile", "Soft": 30000, "Hard": 30000}], capabilities=set(CAPABILITIES))
    assert got == [{"type": "RLIMIT_NOFILE", "hard": 30000, "soft": 30000}]


# --- mounts ----------------------------------------------------------------------------------------

DEFAULT_DESTINATIONS = ["/proc", "/dev", "/dev/pts", "/sys", "/sys/fs/cgroup", "/dev/mqueue", "/dev/shm"]


def by_destination(created: dict) -> dict[str, dict]:
    return {mount["destination"]: mount for mount in created["mounts"]}


def test_default_mounts(rootfs: Path) -> None:
    created = make_spec(rootfs)
    assert [m["destination"] for m in created["mounts"]] == [
        *DEFAULT_DESTINATIONS,
        "/etc/hosts",
        "/etc/hostname",
    ]
    mounts = by_destination(created)
    assert mounts["/proc"] == {
        "destination": "/proc",
        "type": "proc",
        "source": "proc",
        "options": ["nosuid", "noexec", "nodev"],
    }
    assert mounts["/dev"]["options"] == ["nosuid", "strictatime", "mode=755", "size=65536k"]
    assert mounts["/dev/pts"]["options"] == [
        "nosuid",
        "noexec",
        "newinstance",
        "ptmxmode=0666",
        "mode=0620",
        "gid=5",
    ]
    assert mounts["/sys"]["type"] == "sysfs" and "ro" in mounts["/sys"]["options"]
    assert mounts["/sys/fs/cgroup"]["type"] == "cgroup" and "ro" in mounts["/sys/fs/cgroup"]["options"]
    assert mounts["/dev/mqueue"]["type"] == "mqueue"
    assert mounts["/dev/shm"]["options"] == ["nosuid", "noexec", "nodev", "mode=1777", "size=67108864"]
    assert mounts["/etc/hosts"] == {
        "destination": "/etc/hosts",
        "type": "bind",
        "source": "/run/x/hosts",
        "options": ["rbind", "rprivate"],
    }


def test_caller_mounts_are_sorted_by_depth_and_replace_defaults(rootfs: Path) -> None:
    caller = [
        {"destination": "/a/b/c", "type": "bind", "source": "/h/c", "options": ["rbind"]},
        {"destination": "/a", "type": "bind", "source": "/h/a", "options": ["rbind"]},
        {"destination": "/z", "type": "bind", "source": "/h/z", "options": ["rbind"]},
        {"destination": "/a/b/", "type": "bind", "source": "/h/b", "options": ["rbind"]},
        {"destination": "/dev/shm", "type": "bind", "source": "/h/shm", "options": ["rbind"]},
        {"destination": "/etc/hosts", "type": "bind", "source": "/h/hosts", "options": ["rbind", "ro"]},
    ]
    created = make_spec(rootfs, {"HostConfig": {"Tmpfs": {"/a/b": "size=1m"}}}, mounts=caller)
    destinations = [m["destination"] for m in created["mounts"]]
    assert destinations == [
        "/proc", "/dev", "/dev/pts", "/sys", "/sys/fs/cgroup", "/dev/mqueue",
        "/a", "/z", "/etc/hostname", "/a/b", "/dev/shm", "/etc/hosts", "/a/b/c",
    ]  # fmt: skip
    mounts = by_destination(created)
    assert mounts["/dev/shm"]["source"] == "/h/shm"
    assert mounts["/etc/hosts"]["source"] == "/h/hosts"
    assert mounts["/a/b"]["source"] == "/h/b"  # the caller's mount wins over --tmpfs


def test_a_dev_mount_replaces_everything_under_dev(rootfs: Path) -> None:
    caller = [{"destination": "/dev", "type": "bind", "source": "/h/dev", "options": ["rbind"]}]
    destinations = [m["destination"] for m in make_spec(rootfs, mounts=caller)["mounts"]]
    assert destinations == ["/proc", "/sys", "/sys/fs/cgroup", "/dev", "/etc/hosts", "/etc/hostname"]


def test_tmpfs_shm_size_ipc_and_readonly_root(rootfs: Path) -> None:
    created = host_config(rootfs, Tmpfs={"/run": "", "/tmp/x": "size=1m,exec,mode=700"}, ShmSize=1 << 20)
    mounts = by_destination(created)
    assert mounts["/run"] == {
        "destination": "/run",
        "type": "tmpfs",
        "source": "tmpfs",
        "options": ["noexec", "nosuid", "nodev", "rprivate"],
    }
    assert mounts["/tmp/x"]["options"] == ["nosuid", "nodev", "rprivate", "size=1m", "exec", "mode=700"]
    assert mounts["/dev/shm"]["options"][-1] == "size=1048576"
    assert "/dev/shm" not in by_destination(host_config(rootfs, IpcMode="none"))
    host_ipc = by_destination(host_config(rootfs, IpcMode="host"))["/dev/shm"]
    assert host_ipc["type"] == "bind" and host_ipc["source"] == "/dev/shm"

    readonly = host_config(rootfs, ReadonlyRootfs=True)
    assert readonly["root"] == {"path": str(rootfs), "readonly": True}
    mounts = by_destination(readonly)
    assert "ro" not in mounts["/etc/hosts"]["options"]  # Docker keeps the etc files writable
    assert "ro" not in mounts["/dev/shm"]["options"] and "ro" not in mounts["/proc"]["options"]
    assert make_spec(rootfs)["root"] == {"path": str(rootfs), "readonly": False}


def test_privileged_mounts_sys_and_cgroups_writable(rootfs: Path) -> None:
    mounts = by_destination(host_config(rootfs, Privileged=True))
    assert "ro" not in mounts["/sys"]["options"]
    assert "ro" not in mounts["/sys/fs/cgroup"]["options"]
    cgroups = by_destination(host_config(rootfs, SecurityOpt=["writable-cgroups=true"]))["/sys/fs/cgroup"]
    assert "ro" not in cgroups["options"]


# --- namespaces, hostname --------------------------------------------------------------------------


def namespaces(created: dict) -> dict[str, str | None]:
    return {ns["type"]: ns.get("path") for ns in created["linux"]["namespaces"]}


def test_namespaces(rootfs: Path) -> None:
    created = make_spec(rootfs)
    assert namespaces(created) == {"mount": None, "network": None, "ipc": None, "pid": None, "uts": None}
    assert created["hostname"] == CONTAINER_ID[:12]
    assert "network" not in namespaces(host_config(rootfs, NetworkMode="host"))
    assert "network" in namespaces(host_config(rootfs, NetworkMode="none"))
    assert "pid" not in namespaces(host_config(rootfs, PidMode="host"))
    assert "ipc" not in namespaces(host_config(rootfs, IpcMode="host"))
    joined = host_config(rootfs, NetworkMode="container:/proc/42/ns/net")
    assert namespaces(joined)["network"] == "/proc/42/ns/net"
    uts_host = host_config(rootfs, UTSMode="host")
    assert "uts" not in namespaces(uts_host) and "hostname" not in uts_host
    v2 = make_spec(rootfs, host=host_facts(cgroup_version=2))
    assert "cgroup" in namespaces(v2)
    assert "cgroup" not in namespaces(host_config(rootfs, CgroupnsMode="host"))
    assert "cgroup" in namespaces(host_config(rootfs, CgroupnsMode="private"))
    with pytest.raises(InvalidArgument, match="invalid PID mode"):
        host_config(rootfs, PidMode="weird")
    with pytest.raises(InvalidArgument, match="namespace path"):
        host_config(rootfs, IpcMode="container:web")


def test_hostname_domainname_terminal_oom(rootfs: Path) -> None:
    created = make_spec(
        rootfs,
        {"Hostname": "web", "Domainname": "example.org", "Tty": True, "HostConfig": {"OomScoreAdj": 500}},
    )
    assert created["ociVersion"] == "1.0.2"
    assert (created["hostname"], created["domainname"]) == ("web", "example.org")
    assert created["process"]["terminal"] is True
    assert "HOSTNAME=web" in created["process"]["env"] and "TERM=xterm" in created["process"]["env"]
    assert created["process"]["oomScoreAdj"] == 500
    assert created["linux"]["cgroupsPath"] == f"/kapal/{CONTAINER_ID}"
    assert "annotations" not in created
    with pytest.raises(InvalidArgument, match="oom score adj"):
        host_config(rootfs, OomScoreAdj=1001)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ([], False),
        (["no-new-privileges"], True),
        (["no-new-privileges:true"], True),
        (["no-new-privileges=true"], True),
        (["no-new-privileges=false"], False),
        (["apparmor=unconfined", "label=disable"], False),
    ],
)
def test_no_new_privileges(rootfs: Path, options: list, expected: bool) -> None:
    assert host_config(rootfs, SecurityOpt=options)["process"]["noNewPrivileges"] is expected


def test_unknown_security_option(rootfs: Path) -> None:
    with pytest.raises(InvalidArgument, match="invalid --security-opt"):
        host_config(rootfs, SecurityOpt=["frobnicate=1"])


# --- resources, devices, sysctls -------------------------------------------------------------------

MIB = 1024 * 1024


@pytest.mark.parametrize(
    ("config", "key", "expected"),
    [
        ({"Memory": 64 * MIB}, "memory", {"limit": 64 * MIB, "swap": 128 * MIB}),
        ({"Memory": 64 * MIB, "MemorySwap": -1}, "memory", {"limit": 64 * MIB}),
        ({"Memory": 64 * MIB, "MemorySwap": 100 * MIB}, "memory", {"limit": 64 * MIB, "swap": 100 * MIB}),
        (
            {
                "Memory": 64 * MIB,
                "MemoryReservation": 32 * MIB,
                "MemorySwappiness": 10,
                "OomKillDisable": True,
            },
            "memory",
            {
                "limit": 64 * MIB,
                "swap": 128 * MIB,
                "reservation": 32 * MIB,
                "swappiness": 10,
                "disableOOMKiller": True,
            },
        ),
        ({"NanoCpus": 1_500_000_000}, "cpu", {"period": 100000, "quota": 150000}),
        ({"CpuQuota": 50000, "CpuPeriod": 200000}, "cpu", {"period": 200000, "quota": 50000}),
        (
            {"CpuShares": 512, "CpusetCpus": "0-1", "CpusetMems": "0"},
            "cpu",
            {"shares": 512, "cpus": "0-1", "mems": "0"},
        ),
        ({"PidsLimit": 100}, "pids", {"limit": 100}),
        ({"BlkioWeight": 500}, "blockIO", {"weight": 500}),
    ],
)
def test_resources(rootfs: Path, config: dict, key: str, expected: dict) -> None:
    assert host_config(rootfs, **config)["linux"]["resources"][key] == expected


def test_no_resources_by_default(rootfs: Path) -> None:
    assert set(make_spec(rootfs)["linux"]["resources"]) == {"devices"}
    # None, 0 and -1 all mean unlimited, which the spec says by saying nothing.
    for unlimited in (None, 0, -1):
        assert "pids" not in host_config(rootfs, PidsLimit=unlimited)["linux"]["resources"]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"Memory": MIB}, "Minimum memory limit allowed is 6MB"),
        ({"MemorySwap": 100 * MIB}, "always set the Memory limit"),
        ({"Memory": 64 * MIB, "MemorySwap": 32 * MIB}, "larger than memory limit"),
        ({"NanoCpus": 1_000_000_000, "CpuQuota": 50000}, "Conflicting options"),
        ({"CpuShares": -1}, "invalid CPU shares"),
        ({"BlkioWeight": 5}, "blkio weight"),
        ({"MemorySwappiness": 101}, "swappiness"),
    ],
)
def test_resource_errors(rootfs: Path, config: dict, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        host_config(rootfs, **config)


def rule(kind: str | None, major: int | None, minor: int | None, access: str, allow: bool = True) -> dict:
    return spec._device_rule(allow, kind, major, minor, access)


def test_device_cgroup_and_default_devices(rootfs: Path) -> None:
    linux = make_spec(rootfs)["linux"]
    assert linux["resources"]["devices"] == [
        {"allow": False, "access": "rwm"},
        {"allow": True, "type": "c", "access": "m"},
        {"allow": True, "type": "b", "access": "m"},
        *[
            rule("c", major, minor, "rwm")
            for major, minor in [
                (1, 3),
                (1, 5),
                (1, 7),
                (1, 8),
                (1, 9),
                (5, 0),
                (5, 1),
                (5, 2),
                (136, None),
                (10, 200),
            ]
        ],
    ]
    assert [d["path"] for d in linux["devices"]] == [
        "/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty",
    ]  # fmt: skip
    assert linux["devices"][0] == {
        "path": "/dev/null",
        "type": "c",
        "major": 1,
        "minor": 3,
        "fileMode": 0o666,
        "uid": 0,
        "gid": 0,
    }


def test_added_devices_and_rules(rootfs: Path) -> None:
    linux = host_config(
        rootfs,
        Devices=[{"PathOnHost": "/dev/null", "PathInContainer": "/dev/mynull", "CgroupPermissions": "rw"}],
        DeviceCgroupRules=["c 42:* rmw"],
    )["linux"]
    added = linux["devices"][-1]
    assert (added["path"], added["type"], added["major"], added["minor"]) == ("/dev/mynull", "c", 1, 3)
    assert linux["resources"]["devices"][-2:] == [rule("c", 1, 3, "rw"), rule("c", 42, None, "rmw")]
    with pytest.raises(InvalidArgument, match="not a device node"):
        host_config(rootfs, Devices=[{"PathOnHost": "/etc/hostname"}])
    with pytest.raises(InvalidArgument, match="custom device"):
        host_config(rootfs, Devices=[{"PathOnHost": "/dev/does-not-exist"}])
    with pytest.raises(InvalidArgument, match="permissions"):
        host_config(rootfs, Devices=[{"PathOnHost": "/dev/null", "CgroupPermissions": "rwx"}])


def test_privileged_allows_all_devices(rootfs: Path) -> None:
    linux = host_config(rootfs, Privileged=True)["linux"]
    assert linux["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    paths = {d["path"] for d in linux["devices"]}
    assert "/dev/null" in paths and "/dev/console" not in paths
    assert not any(path.startswith("/dev/pts/") for path in paths)


def test_sysctls(rootfs: Path) -> None:
    sysctls = host_config(rootfs, Sysctls={"net.core.somaxconn": "1024", "kernel.shmmax": "1"})["linux"][
        "sysctl"
    ]
    assert sysctls["net.core.somaxconn"] == "1024" and sysctls["kernel.shmmax"] == "1"
    if os.path.exists("/proc/sys/net/ipv4/ip_unprivileged_port_start"):
        assert sysctls["net.ipv4.ip_unprivileged_port_start"] == "0"
    assert host_config(rootfs, NetworkMode="host")["linux"]["sysctl"] == {}
    with pytest.raises(InvalidArgument, match="host's network namespace"):
        host_config(rootfs, NetworkMode="host", Sysctls={"net.core.somaxconn": "1"})
    with pytest.raises(InvalidArgument, match="not namespaced"):
        host_config(rootfs, Sysctls={"vm.swappiness": "1"})
    with pytest.raises(InvalidArgument, match="IPC namespace"):
        host_config(rootfs, IpcMode="host", Sysctls={"kernel.shmmax": "1"})


# --- masked paths and seccomp ----------------------------------------------------------------------


def test_masked_and_readonly_paths(rootfs: Path) -> None:
    linux = make_spec(rootfs)["linux"]
    assert linux["maskedPaths"][: len(MASKED_PATHS)] == list(MASKED_PATHS)
    assert {"/proc/kcore", "/proc/keys", "/sys/firmware"} <= set(linux["maskedPaths"])
    assert linux["readonlyPaths"] == list(READONLY_PATHS) and "/proc/sys" in READONLY_PATHS
    for unconfined in (
        host_config(rootfs, Privileged=True),
        host_config(rootfs, SecurityOpt=["systempaths=unconfined"]),
    ):
        assert "maskedPaths" not in unconfined["linux"] and "readonlyPaths" not in unconfined["linux"]
    explicit = host_config(rootfs, MaskedPaths=["/proc/x"], ReadonlyPaths=[])["linux"]
    assert (explicit["maskedPaths"], explicit["readonlyPaths"]) == (["/proc/x"], [])


def allowed(profile: dict) -> set[str]:
    """Syscalls allowed whatever their arguments."""
    return {
        name
        for rule in profile["syscalls"]
        if rule["action"] == "SCMP_ACT_ALLOW" and not rule.get("args")
        for name in rule["names"]
    }


def rules_for(profile: dict, name: str) -> list[dict]:
    return [rule for rule in profile["syscalls"] if name in rule["names"]]


def test_default_profile_shape() -> None:
    profile = seccomp.default_profile()
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO" and profile["defaultErrnoRet"] == 1
    arches = {entry["architecture"]: entry["subArchitectures"] for entry in profile["archMap"]}
    assert arches["SCMP_ARCH_X86_64"] == ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    assert arches["SCMP_ARCH_AARCH64"] == ["SCMP_ARCH_ARM"]
    sys_admin = next(r for r in profile["syscalls"] if "unshare" in r["names"])
    assert sys_admin["includes"] == {"caps": ["CAP_SYS_ADMIN"]} and "mount" in sys_admin["names"]
    clone = [r for r in profile["syscalls"] if r["names"] == ["clone"]]
    assert clone[0]["excludes"] == {"caps": ["CAP_SYS_ADMIN"], "arches": ["s390", "s390x"]}
    json.dumps(profile)  # it is plain JSON, writable as a --security-opt seccomp= file


def test_default_profile_without_cap_sys_admin() -> None:
    oci = seccomp.to_oci(seccomp.default_profile(), DEFAULT_CAPABILITIES, "x86_64", (6, 1))
    assert oci["defaultAction"] == "SCMP_ACT_ERRNO" and oci["defaultErrnoRet"] == 1
    assert oci["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    names = allowed(oci)
    assert {"read", "write", "execve", "arch_prctl", "chroot", "ptrace"} <= names
    assert not {"unshare", "mount", "setns", "umount2", "reboot", "bpf", "clone"} & names
    (clone,) = rules_for(oci, "clone")
    assert clone["args"] == [
        {"index": 0, "value": seccomp.NAMESPACE_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}
    ]
    assert seccomp.NAMESPACE_FLAGS & seccomp.CLONE_NEWUSER
    (clone3,) = rules_for(oci, "clone3")
    assert clone3 == {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}
    sockets = rules_for(oci, "socket")
    assert [r["args"][0]["op"] for r in sockets] == ["SCMP_CMP_LT", "SCMP_CMP_EQ", "SCMP_CMP_GT"]
    assert len(rules_for(oci, "personality")) == 5
    assert "includes" not in json.dumps(oci) and "excludes" not in json.dumps(oci)


def test_cap_sys_admin_opens_namespaces_and_mounts() -> None:
    oci = seccomp.to_oci(seccomp.default_profile(), [*DEFAULT_CAPABILITIES, "SYS_ADMIN"], "amd64", (6, 1))
    names = allowed(oci)
    assert {"unshare", "mount", "setns", "clone", "clone3", "umount2", "sethostname"} <= names
    assert all(rule["action"] == "SCMP_ACT_ALLOW" for rule in rules_for(oci, "clone3"))
    assert not any(rule.get("args") for rule in rules_for(oci, "clone"))


def test_conditions_by_arch_and_kernel() -> None:
    arm = seccomp.to_oci(seccomp.default_profile(), DEFAULT_CAPABILITIES, "aarch64", (6, 1))
    assert arm["architectures"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    assert "arch_prctl" not in allowed(arm) and "set_tls" in allowed(arm)
    old = seccomp.to_oci(seccomp.default_profile(), DEFAULT_CAPABILITIES, "x86_64", (4, 4))
    assert "ptrace" not in allowed(old)
    traced = seccomp.to_oci(seccomp.default_profile(), ["CAP_SYS_PTRACE"], "x86_64", (4, 4))
    assert "ptrace" in allowed(traced)


def test_includes_need_all_caps_and_excludes_any() -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [
            {"name": "a", "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_A", "CAP_B"]}},
            {"names": ["b"], "action": "SCMP_ACT_ALLOW", "excludes": {"caps": ["CAP_A", "CAP_C"]}},
            {"names": ["c"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "5.10"}},
            {"names": ["d"], "action": "SCMP_ACT_ALLOW", "excludes": {"minKernel": "5.10"}},
        ],
    }
    assert allowed(seccomp.to_oci(profile, ["CAP_A"], "x86_64", (5, 4))) == {"d"}
    assert allowed(seccomp.to_oci(profile, ["CAP_A", "CAP_B"], "x86_64", (5, 10))) == {"a", "c"}
    assert allowed(seccomp.to_oci(profile, [], "x86_64", (6, 0))) == {"b", "c"}
    assert seccomp.to_oci(profile, [], "x86_64")["architectures"] == ["SCMP_ARCH_X86_64"]
    assert seccomp.to_oci({}, []) == {}


def test_profile_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InvalidArgument, match="Decoding seccomp profile failed"):
        seccomp.load_profile(str(bad))
    with pytest.raises(InvalidArgument, match="opening seccomp profile"):
        seccomp.load_profile(str(tmp_path / "missing.json"))
    both = {"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["x"], "archMap": [{}], "syscalls": []}
    with pytest.raises(InvalidArgument, match="both 'architectures' and 'archMap'"):
        seccomp.to_oci(both, [])
    with pytest.raises(InvalidArgument, match="both 'name' and 'names'"):
        seccomp.to_oci({"defaultAction": "X", "syscalls": [{"name": "a", "names": ["b"], "action": "A"}]}, [])


def test_seccomp_in_the_spec(rootfs: Path, tmp_path: Path) -> None:
    default = make_spec(rootfs)["linux"]["seccomp"]
    assert "unshare" not in allowed(default) and "read" in allowed(default)
    with_admin = host_config(rootfs, CapAdd=["SYS_ADMIN"])["linux"]["seccomp"]
    assert "unshare" in allowed(with_admin)
    assert "seccomp" not in host_config(rootfs, SecurityOpt=["seccomp=unconfined"])["linux"]
    assert "seccomp" not in host_config(rootfs, Privileged=True)["linux"]
    custom = tmp_path / "profile.json"
    custom.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "includes": {"caps": ["CAP_CHOWN"]}},
    ]}))  # fmt: skip
    loaded = host_config(rootfs, SecurityOpt=[f"seccomp={custom}"])["linux"]["seccomp"]
    assert loaded == {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}],
    }
    inline = host_config(rootfs, SecurityOpt=["seccomp=" + custom.read_text()], CapDrop=["CHOWN"])
    assert inline["linux"]["seccomp"] == {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": []}
    with pytest.raises(InvalidArgument, match="Decoding seccomp profile failed"):
        host_config(rootfs, SecurityOpt=["seccomp={broken"])


# --- exec ------------------------------------------------------------------------------------------


def test_exec_process(rootfs: Path) -> None:
    created = make_spec(rootfs, {"Env": ["A=1"], "WorkingDir": "/srv", "User": "app"})
    process = exec_process(created, {"Cmd": ["ls", "-l"], "Env": ["A=2", "B=3"]}, None)
    assert process["args"] == ["ls", "-l"]
    assert process["env"] == [f"PATH={DEFAULT_PATH}", f"HOSTNAME={CONTAINER_ID[:12]}", "A=2", "B=3"]
    assert process["cwd"] == "/srv" and process["user"]["uid"] == 1000
    assert process["terminal"] is False and process["rlimits"] == created["process"]["rlimits"]
    assert process["capabilities"] == created["process"]["capabilities"]
    assert created["process"]["args"] == ["sh"]  # the container's own process is left alone

    user = resolve_user(str(rootfs), "svc")
    tty = exec_process(created, {"Cmd": ["sh"], "Tty": True, "WorkingDir": "/tmp", "User": "svc"}, user)
    assert tty["terminal"] is True and "TERM=xterm" in tty["env"]
    assert tty["cwd"] == "/tmp" and tty["user"] == {"uid": 1001, "gid": 50, "additionalGids": [50, 999]}

    privileged = exec_process(created, {"Cmd": ["sh"], "Privileged": True}, None, host_facts())
    assert set(privileged["capabilities"]["bounding"]) == ALL_ON_HOST
    detected = exec_process(created, {"Cmd": ["sh"], "Privileged": True}, None)
    assert set(detected["capabilities"]["bounding"]) == HostFacts.detect().capabilities
    with pytest.raises(InvalidArgument, match="No exec command specified"):
        exec_process(created, {"Cmd": []}, None)
