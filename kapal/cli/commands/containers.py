"""Container commands: run, create, start, stop, restart, kill, rm, ps, logs, wait, attach, ..."""

from __future__ import annotations

import os
import sys
import time

from kapal.cli import jsonlite as json
from kapal.cli.common import (
    CommandError,
    Context,
    DaemonError,
    for_each,
    output_rows,
    parse_filter_flags,
    parser,
    print_error,
    sorted_row,
)
from kapal.units import human_duration, human_size, parse_size

TYPE_CHECKING = False
if TYPE_CHECKING:
    import threading
    from typing import Any

    from kapal.cli.client import Response


# -- stdio over an attached connection ---------------------------------------------------------


def _demux(raw: Any, tty: bool) -> None:
    """Copy the attach stream to stdout/stderr: raw with a TTY, else Docker's 8-byte frames."""
    out, err = sys.stdout.buffer, sys.stderr.buffer
    if tty:
        while chunk := raw.read1(65536):
            out.write(chunk)
            out.flush()
        return
    while True:
        header = raw.read(8)
        if len(header) < 8:
            return
        size = int.from_bytes(header[4:8], "big")
        data = raw.read(size)
        target = err if header[0] == 2 else out
        target.write(data)
        target.flush()


def _feed_stdin(sock: Any, detach: bytes, detached: threading.Event) -> None:
    import _socket

    from kapal.container.detach_keys import EscapeScanner

    scanner = EscapeScanner(detach)
    try:
        while True:
            data = os.read(sys.stdin.fileno(), 65536)
            if not data:
                break
            data, done = scanner.feed(data)
            if done:  # pass the keys on: the daemon sees them too and ends the stream, not the container
                detached.set()
                data += detach
            if data:
                sock.sendall(data)
            if done:
                return
    except OSError:
        return
    try:
        sock.shutdown(_socket.SHUT_WR)
    except OSError:
        pass


class _RawTerminal:
    """Puts the local terminal in raw mode for ``-t`` and keeps the remote one's size in step."""

    def __init__(self, resize: Any) -> None:
        self._resize = resize
        self._saved = None

    def __enter__(self) -> _RawTerminal:
        import signal
        import termios
        import tty

        if sys.stdin.isatty():
            self._saved = termios.tcgetattr(sys.stdin.fileno())
            tty.setraw(sys.stdin.fileno())
        signal.signal(signal.SIGWINCH, lambda *_: self.send_size())
        return self

    def send_size(self) -> None:
        try:
            size = os.get_terminal_size(sys.stdout.fileno())
        except OSError:
            return
        try:
            self._resize(size.lines, size.columns)
        except (DaemonError, OSError):
            pass

    def __exit__(self, *exc: object) -> None:
        import termios

        if self._saved is not None:
            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, self._saved)


def exit_status(waiter: Response) -> dict[str, Any]:
    """A ``wait`` response's JSON, taken as soon as it is whole, as the docker CLI does: kapald may
    still be finishing the reply (removing an ``--rm`` container's files) after sending it."""
    data = b""
    while chunk := waiter.read1():
        data += chunk
        try:
            return json.loads(data)
        except ValueError:
            continue
    return json.loads(data) if data.strip() else {}


def detach_keys(flag: str | None) -> str:
    """--detach-keys, else the docker CLI config's ``detachKeys``, else ctrl-p,ctrl-q."""
    from kapal.container.detach_keys import DEFAULT, DetachKeysError, parse

    if flag is None:
        directory = os.environ.get("DOCKER_CONFIG") or os.path.expanduser("~/.docker")
        config = os.path.join(directory, "config.json")
        try:
            with open(config) as file:
                flag = json.loads(file.read()).get("detachKeys")
        except (OSError, ValueError, AttributeError):
            flag = None
    keys = DEFAULT if flag is None else flag
    try:
        parse(keys)
    except DetachKeysError as error:
        raise CommandError(str(error), 125) from None
    return keys


def stream_attached(response: Response, tty: bool, stdin: bool, resize: Any = None, keys: str = "") -> bool:
    """Relay the attached streams until they end; whether the user detached (the detach keys,
    watched with a TTY only, as Docker does)."""
    detached = None
    if stdin:  # threading costs 3 ms of start-up: only a command that feeds stdin needs it
        import threading

        from kapal.container.detach_keys import parse

        detached = threading.Event()
        sequence = parse(keys) if tty else b""
        threading.Thread(target=_feed_stdin, args=(response.sock, sequence, detached), daemon=True).start()
    if tty and resize is not None and sys.stdout.isatty():
        with _RawTerminal(resize) as terminal:
            terminal.send_size()
            _demux(response.raw, tty)
    else:
        _demux(response.raw, tty)
    return detached is not None and detached.is_set()


# -- run / create ------------------------------------------------------------------------------


def _add_create_flags(p: Any) -> None:
    add = p.add_argument
    add("image")
    add("command", nargs="...")
    add("--name")
    add("-e", "--env", action="append", default=[])
    add("--env-file", action="append", default=[])
    add("-w", "--workdir")
    add("-u", "--user")
    add("--entrypoint")
    add("-h", "--hostname")
    add("--domainname")
    add("-l", "--label", action="append", default=[])
    add("--label-file", action="append", default=[])
    add("-i", "--interactive", action="store_true")
    add("-t", "--tty", action="store_true")
    add("-v", "--volume", action="append", default=[])
    add("--mount", action="append", default=[])
    add("--tmpfs", action="append", default=[])
    add("--volumes-from", action="append", default=[])
    add("--volume-driver")
    add("--read-only", action="store_true")
    add("-m", "--memory")
    add("--memory-swap")
    add("--memory-reservation")
    add("--cpus")
    add("--cpu-shares", "-c", type=int)
    add("--cpu-period", type=int)
    add("--cpu-quota", type=int)
    add("--cpuset-cpus")
    add("--cpuset-mems")
    add("--pids-limit", type=int)
    add("--ulimit", action="append", default=[])
    add("--cap-add", action="append", default=[])
    add("--cap-drop", action="append", default=[])
    add("--privileged", action="store_true")
    add("--security-opt", action="append", default=[])
    add("--restart", default="no")
    add("--stop-signal")
    add("--stop-timeout", type=int)
    add("--health-cmd")
    add("--health-interval")
    add("--health-timeout")
    add("--health-retries", type=int)
    add("--health-start-period")
    add("--no-healthcheck", action="store_true")
    add("--log-driver")
    add("--log-opt", action="append", default=[])
    add("--network", "--net", default="")
    add("--network-alias", "--net-alias", action="append", default=[])
    add("--ip")
    add("--init", action="store_true")
    add("--runtime")
    add("--platform")
    add("--pull", default="missing")
    add("--add-host", action="append", default=[])
    add("--dns", action="append", default=[])
    add("--dns-search", action="append", default=[])
    add("--dns-option", action="append", default=[])
    add("--shm-size")
    add("--ipc")
    add("--pid")
    add("--uts")
    add("--group-add", action="append", default=[])
    add("--device", action="append", default=[])
    add("--sysctl", action="append", default=[])
    add("--oom-score-adj", type=int)
    add("--oom-kill-disable", action="store_true")
    add("-p", "--publish", action="append", default=[])
    add("-P", "--publish-all", action="store_true")
    add("--expose", action="append", default=[])
    add("--cidfile")
    add("-q", "--quiet", action="store_true")


def _size(value: str | None, flag: str) -> int | None:
    if value is None:
        return None
    if value == "-1":
        return -1
    try:
        return parse_size(value)
    except ValueError as error:
        raise CommandError(f'invalid argument "{value}" for "{flag}" flag: {error}', 125) from None


def _read_env_file(path: str) -> list[str]:
    try:
        with open(path) as env_file:
            lines = env_file.read().splitlines()
    except OSError as error:
        raise CommandError(f"open {path}: {error.strerror.lower()}", 125) from None
    out = []
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "=" not in line:
            value = os.environ.get(line)
            if value is not None:
                out.append(f"{line}={value}")
            continue
        out.append(line)
    return out


def _env(values: list[str]) -> list[str]:
    out = []
    for item in values:
        if "=" in item:
            out.append(item)
        elif item in os.environ:
            out.append(f"{item}={os.environ[item]}")
    return out


def _labels(values: list[str], files: list[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for path in files:
        for line in _read_env_file(path):
            key, _, value = line.partition("=")
            labels[key] = value
    for item in values:
        key, _, value = item.partition("=")
        labels[key] = value
    return labels


def _restart_policy(value: str) -> dict[str, Any]:
    name, _, count = value.partition(":")
    if name not in ("no", "always", "on-failure", "unless-stopped"):
        raise CommandError(f"invalid restart policy '{value}'", 125)
    if count and name != "on-failure":
        raise CommandError(
            "invalid restart policy: maximum retry count can only be used with 'on-failure'", 125
        )
    return {"Name": name, "MaximumRetryCount": int(count) if count else 0}


def _ulimits(values: list[str]) -> list[dict[str, Any]]:
    out = []
    for item in values:
        name, sep, limits = item.partition("=")
        if not sep:
            raise CommandError(f'invalid argument "{item}" for "--ulimit" flag: invalid ulimit argument', 125)
        soft, _, hard = limits.partition(":")
        try:
            out.append({"Name": name, "Soft": int(soft), "Hard": int(hard or soft)})
        except ValueError:
            raise CommandError(
                f'invalid argument "{item}" for "--ulimit" flag: invalid ulimit value', 125
            ) from None
    return out


def _duration_ns(value: str | None) -> int:
    if not value:
        return 0
    import re

    total = 0.0
    units = {"ns": 1, "us": 1e3, "µs": 1e3, "ms": 1e6, "s": 1e9, "m": 60e9, "h": 3600e9}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", value)
    if not parts or "".join(a + b for a, b in parts) != value:
        raise CommandError(f'invalid argument "{value}": time: invalid duration "{value}"', 125)
    for amount, unit in parts:
        total += float(amount) * units[unit]
    return int(total)


def _tmpfs(values: list[str]) -> dict[str, str]:
    out = {}
    for item in values:
        path, _, options = item.partition(":")
        out[path] = options
    return out


def _devices(values: list[str]) -> list[dict[str, str]]:
    out = []
    for item in values:
        parts = item.split(":")
        host = parts[0]
        inside = parts[1] if len(parts) > 1 and not set(parts[1]) <= set("rwm") else host
        perms = parts[-1] if len(parts) > 1 and set(parts[-1]) <= set("rwm") else "rwm"
        out.append({"PathOnHost": host, "PathInContainer": inside, "CgroupPermissions": perms})
    return out


def _ports(values: list[str], expose: list[str]) -> tuple[dict[str, dict], dict[str, list[dict[str, str]]]]:
    exposed: dict[str, dict] = {}
    bindings: dict[str, list[dict[str, str]]] = {}
    for item in expose:
        port = item if "/" in item else f"{item}/tcp"
        exposed[port] = {}
    for item in values:
        spec, _, proto = item.partition("/")
        proto = proto or "tcp"
        parts = spec.rsplit(":", 2)
        if len(parts) == 1:
            host_ip, host_port, container_port = "", "", parts[0]
        elif len(parts) == 2:
            host_ip, host_port, container_port = "", parts[0], parts[1]
        else:
            host_ip, host_port, container_port = parts
        key = f"{container_port}/{proto}"
        exposed[key] = {}
        bindings.setdefault(key, []).append({"HostIp": host_ip.strip("[]"), "HostPort": host_port})
    return exposed, bindings


def _binds(values: list[str]) -> list[str]:
    """``-v`` values; a relative host path (``./data:/d``) made absolute, as docker's client does."""
    out = []
    for value in values:
        host, sep, rest = value.partition(":")
        if sep and host.startswith("."):
            host = os.path.abspath(host)
        out.append(host + sep + rest)
    return out


def create_body(opts: Any) -> dict[str, Any]:
    env = []
    for path in opts.env_file:
        env += _read_env_file(path)
    env += _env(opts.env)
    exposed, bindings = _ports(opts.publish, opts.expose)
    host_config: dict[str, Any] = {
        "Binds": _binds(opts.volume) or None,
        "VolumesFrom": opts.volumes_from or None,
        "VolumeDriver": opts.volume_driver or "",
        "AutoRemove": bool(getattr(opts, "rm", False)),
        "NetworkMode": opts.network or "default",
        "RestartPolicy": _restart_policy(opts.restart),
        "Privileged": opts.privileged,
        "ReadonlyRootfs": opts.read_only,
        "CapAdd": opts.cap_add or None,
        "CapDrop": opts.cap_drop or None,
        "SecurityOpt": opts.security_opt or None,
        "Tmpfs": _tmpfs(opts.tmpfs) or None,
        "Ulimits": _ulimits(opts.ulimit) or None,
        "ExtraHosts": opts.add_host or None,
        "Dns": opts.dns,
        "DnsSearch": opts.dns_search,
        "DnsOptions": opts.dns_option,
        "GroupAdd": opts.group_add or None,
        "Devices": _devices(opts.device),
        "Sysctls": dict(item.split("=", 1) for item in opts.sysctl) if opts.sysctl else None,
        "PortBindings": bindings,
        "PublishAllPorts": opts.publish_all,
        "Init": True if opts.init else None,
    }
    for key, flag, value in (
        ("Memory", "--memory", opts.memory),
        ("MemorySwap", "--memory-swap", opts.memory_swap),
        ("MemoryReservation", "--memory-reservation", opts.memory_reservation),
        ("ShmSize", "--shm-size", opts.shm_size),
    ):
        size = _size(value, flag)
        if size is not None:
            host_config[key] = size
    if opts.cpus:
        try:
            host_config["NanoCpus"] = int(float(opts.cpus) * 1e9)
        except ValueError:
            raise CommandError(f'invalid argument "{opts.cpus}" for "--cpus" flag', 125) from None
    for key, value in (
        ("CpuShares", opts.cpu_shares),
        ("CpuPeriod", opts.cpu_period),
        ("CpuQuota", opts.cpu_quota),
        ("CpusetCpus", opts.cpuset_cpus),
        ("CpusetMems", opts.cpuset_mems),
        ("PidsLimit", opts.pids_limit),
        ("OomScoreAdj", opts.oom_score_adj),
        ("IpcMode", opts.ipc),
        ("PidMode", opts.pid),
        ("UTSMode", opts.uts),
        ("Runtime", opts.runtime),
    ):
        if value is not None:
            host_config[key] = value
    if opts.oom_kill_disable:
        host_config["OomKillDisable"] = True
    if opts.log_driver or opts.log_opt:
        host_config["LogConfig"] = {
            "Type": opts.log_driver or "json-file",
            "Config": dict(item.split("=", 1) for item in opts.log_opt),
        }
    if opts.mount:
        host_config["Mounts"] = [_parse_mount(item) for item in opts.mount]
    body: dict[str, Any] = {
        "Image": opts.image,
        "Env": env,
        "Labels": _labels(opts.label, opts.label_file),
        "Tty": opts.tty,
        "OpenStdin": opts.interactive,
        "StdinOnce": opts.interactive and not getattr(opts, "detach", False),
        "AttachStdin": opts.interactive and not getattr(opts, "detach", False),
        "AttachStdout": not getattr(opts, "detach", False),
        "AttachStderr": not getattr(opts, "detach", False),
        "HostConfig": host_config,
    }
    if opts.network_alias or opts.ip:
        endpoint: dict[str, Any] = {"Aliases": opts.network_alias or None}
        if opts.ip:
            endpoint["IPAMConfig"] = {"IPv4Address": opts.ip}
        body["NetworkingConfig"] = {"EndpointsConfig": {opts.network or "bridge": endpoint}}
    if opts.command:
        body["Cmd"] = opts.command
    if opts.entrypoint is not None:
        body["Entrypoint"] = [opts.entrypoint] if opts.entrypoint else [""]
    for key, value in (
        ("WorkingDir", opts.workdir),
        ("User", opts.user),
        ("Hostname", opts.hostname),
        ("Domainname", opts.domainname),
        ("StopSignal", opts.stop_signal),
        ("StopTimeout", opts.stop_timeout),
    ):
        if value is not None:
            body[key] = value
    if exposed:
        body["ExposedPorts"] = exposed
    if opts.no_healthcheck:
        body["Healthcheck"] = {"Test": ["NONE"]}
    elif opts.health_cmd:
        body["Healthcheck"] = {
            "Test": ["CMD-SHELL", opts.health_cmd],
            "Interval": _duration_ns(opts.health_interval),
            "Timeout": _duration_ns(opts.health_timeout),
            "Retries": opts.health_retries or 0,
            "StartPeriod": _duration_ns(opts.health_start_period),
        }
    return body


_MOUNT_FLAGS = {"readonly", "ro", "volume-nocopy", "bind-nonrecursive", "bind-create-src"}


def _mount_bool(key: str, value: str, has_value: bool) -> bool:
    if not has_value or value in ("1", "true"):
        return True
    if value in ("0", "false"):
        return False
    raise ValueError(
        f"invalid value for '{key}': invalid boolean value ({json.dumps(value)}): "
        'must be one of "true", "1", "false", or "0" (default "true")'
    )


def _mount_spec(text: str) -> dict[str, Any]:
    """One ``--mount`` value as the API's Mount object (docker's ``opts.MountOpt.Set``)."""
    import csv

    text = text.strip()
    if not text:
        raise ValueError("value is empty")
    fields = next(csv.reader([text]))
    mount: dict[str, Any] = {"Type": "volume"}

    def options(name: str) -> dict[str, Any]:
        return mount.setdefault(name, {})

    for field in fields:
        key, sep, value = field.partition("=")
        has_value = bool(sep)
        if key.strip() != key:
            raise ValueError(
                f"invalid option '{key.strip()}' in '{field}': option should not have whitespace"
            )
        if has_value and not value.strip():
            raise ValueError(f"invalid value for '{key}': value is empty")
        if has_value and value.strip() != value:
            raise ValueError(f"invalid value for '{key}' in '{field}': value should not have whitespace")
        key = key.lower()
        if not has_value and key not in _MOUNT_FLAGS:
            raise ValueError(f"invalid field '{field}' must be a key=value pair")
        if key == "type":
            mount["Type"] = value.lower()
        elif key in ("source", "src"):
            mount["Source"] = os.path.abspath(value) if value.startswith(".") else value
        elif key in ("target", "dst", "destination"):
            mount["Target"] = value
        elif key in ("readonly", "ro"):
            mount["ReadOnly"] = _mount_bool(key, value, has_value)
        elif key == "consistency":
            mount["Consistency"] = value.lower()
        elif key == "bind-propagation":
            options("BindOptions")["Propagation"] = value.lower()
        elif key == "bind-nonrecursive":
            raise ValueError("bind-nonrecursive is deprecated, use bind-recursive=disabled instead")
        elif key == "bind-recursive":
            recursive = {
                "enabled": None,
                "disabled": "NonRecursive",
                "writable": "ReadOnlyNonRecursive",
                "readonly": "ReadOnlyForceRecursive",
            }
            if value not in recursive:
                raise ValueError(
                    f"invalid value for {key}: {value} "
                    '(must be "enabled", "disabled", "writable", or "readonly")'
                )
            if recursive[value]:
                options("BindOptions")[recursive[value]] = True
        elif key == "bind-create-src":
            options("BindOptions")["CreateMountpoint"] = _mount_bool(key, value, has_value)
        elif key == "volume-subpath":
            options("VolumeOptions")["Subpath"] = value
        elif key == "volume-nocopy":
            options("VolumeOptions")["NoCopy"] = _mount_bool(key, value, has_value)
        elif key in ("volume-label", "volume-driver", "volume-opt"):
            volume = options("VolumeOptions")
            if key == "volume-label":
                label, _, label_value = value.partition("=")
                if label:
                    volume.setdefault("Labels", {})[label] = label_value
                continue
            driver = volume.setdefault("DriverConfig", {})
            if key == "volume-driver":
                driver["Name"] = value
            else:
                option, _, option_value = value.partition("=")
                if option:
                    driver.setdefault("Options", {})[option] = option_value
        elif key == "image-subpath":
            options("ImageOptions")["Subpath"] = value
        elif key == "tmpfs-size":
            try:
                options("TmpfsOptions")["SizeBytes"] = parse_size(value)
            except ValueError:
                raise ValueError(f"invalid value for {key}: {value}") from None
        elif key == "tmpfs-mode":
            try:
                options("TmpfsOptions")["Mode"] = int(value, 8)
            except ValueError:
                raise ValueError(f"invalid value for {key}: {value}") from None
        else:
            raise ValueError(f"unknown option '{key}' in '{field}'")
    kind = mount["Type"]
    if not mount.get("Target"):
        raise ValueError("target is required")
    if not kind:
        raise ValueError("type is required")
    for prefix, name, owner in (
        ("bind", "BindOptions", "bind"),
        ("volume", "VolumeOptions", "volume"),
        ("image", "ImageOptions", "image"),
        ("tmpfs", "TmpfsOptions", "tmpfs"),
    ):
        if name in mount and kind != owner:
            raise ValueError(f"cannot mix '{prefix}-*' options with mount type '{kind}'")
    bind = mount.get("BindOptions") or {}
    if bind.get("ReadOnlyNonRecursive") and not mount.get("ReadOnly"):
        raise ValueError(
            "option 'bind-recursive=writable' requires 'readonly' to be specified in conjunction"
        )
    if bind.get("ReadOnlyForceRecursive"):
        if not mount.get("ReadOnly"):
            raise ValueError(
                "option 'bind-recursive=readonly' requires 'readonly' to be specified in conjunction"
            )
        if bind.get("Propagation") != "rprivate":
            raise ValueError(
                "option 'bind-recursive=readonly' requires 'bind-propagation=rprivate' "
                "to be specified in conjunction"
            )
    return mount


def _parse_mount(text: str) -> dict[str, Any]:
    try:
        return _mount_spec(text)
    except ValueError as error:
        raise CommandError(f'invalid argument "{text}" for "--mount" flag: {error}', 125) from None


def _create(ctx: Context, body: dict[str, Any], name: str | None) -> str:
    try:
        result = ctx.client.json("POST", "/containers/create", {"name": name}, body)
    except DaemonError as error:
        if error.status == 404 and "No such image" in error.message:
            print_error(f"Unable to find image '{body['Image']}' locally")
            try:
                for _ in ctx.client.stream("POST", "/images/create", {"fromImage": body["Image"]}):
                    pass
            except DaemonError as pull_error:
                raise CommandError(f"kapal: Error response from daemon: {pull_error.message}", 125) from None
            result = ctx.client.json("POST", "/containers/create", {"name": name}, body)
        else:
            raise CommandError(f"kapal: Error response from daemon: {error.message}", 125) from None
    for warning in result.get("Warnings") or []:
        print_error(f"WARNING: {warning}")
    return result["Id"]


def _status_code(message: str) -> int:
    """The exit code docker gives a run whose container could not start."""
    if "executable file not found" in message or "no such file or directory" in message:
        return 127
    if "permission denied" in message or "is a directory" in message:
        return 126
    return 125


def run(ctx: Context, prog: str, args: list[str]) -> int:
    p = parser(
        prog,
        f"{prog} [OPTIONS] IMAGE [COMMAND] [ARG...]",
        "Create and run a new container from an image",
        False,
    )
    _add_create_flags(p)
    p.add_argument("-d", "--detach", action="store_true")
    p.add_argument("--rm", action="store_true")
    p.add_argument("-a", "--attach", action="append", default=[])
    p.add_argument("--sig-proxy", default="true")
    p.add_argument("--detach-keys")
    opts = p.parse_args(args)
    body = create_body(opts)
    container_id = _create(ctx, body, opts.name)
    if opts.cidfile:
        with open(opts.cidfile, "x") as cidfile:
            cidfile.write(container_id)
    client = ctx.client
    if opts.detach:
        try:
            client.json("POST", f"/containers/{container_id}/start")
        except DaemonError as error:
            raise CommandError(
                f"kapal: Error response from daemon: {error.message}", _status_code(error.message)
            ) from None
        print(container_id)
        return 0
    streams = opts.attach or ["stdout", "stderr"] + (["stdin"] if opts.interactive else [])
    keys = detach_keys(opts.detach_keys)
    attach = client.upgrade(
        "POST",
        f"/containers/{container_id}/attach",
        {
            "stream": True,
            "stdin": "stdin" in streams,
            "stdout": "stdout" in streams,
            "stderr": "stderr" in streams,
            "detachKeys": keys,
        },
    )
    condition = "removed" if opts.rm else "next-exit"
    waiter = client.request("POST", f"/containers/{container_id}/wait", {"condition": condition})
    try:
        client.json("POST", f"/containers/{container_id}/start")
    except DaemonError as error:
        attach.close()
        if opts.rm:
            try:
                client.json("DELETE", f"/containers/{container_id}", {"force": True})
            except DaemonError:
                pass
        raise CommandError(
            f"kapal: Error response from daemon: {error.message}", _status_code(error.message)
        ) from None

    def resize(height: int, width: int) -> None:
        client.json("POST", f"/containers/{container_id}/resize", {"h": height, "w": width})

    if stream_attached(attach, opts.tty, "stdin" in streams, resize, keys):
        attach.close()
        waiter.close()
        return 0
    attach.close()
    result = exit_status(waiter)
    error = (result.get("Error") or {}).get("Message")
    if error:
        print_error(error)
    return int(result.get("StatusCode", 0))


def create(ctx: Context, prog: str, args: list[str]) -> int:
    p = parser(prog, f"{prog} [OPTIONS] IMAGE [COMMAND] [ARG...]", "Create a new container", False)
    _add_create_flags(p)
    p.add_argument("--rm", action="store_true")
    opts = p.parse_args(args)
    container_id = _create(ctx, create_body(opts), opts.name)
    if opts.cidfile:
        with open(opts.cidfile, "x") as cidfile:
            cidfile.write(container_id)
    print(container_id)
    return 0


# -- simple verbs ------------------------------------------------------------------------------


def start(ctx: Context, prog: str, args: list[str]) -> int:
    p = parser(prog, f"{prog} [OPTIONS] CONTAINER [CONTAINER...]", "Start one or more stopped containers")
    p.add_argument("containers", nargs="+")
    p.add_argument("-a", "--attach", action="store_true")
    p.add_argument("-i", "--interactive", action="store_true")
    p.add_argument("--detach-keys")
    opts = p.parse_args(args)
    client = ctx.client
    if opts.attach or opts.interactive:
        if len(opts.containers) > 1:
            raise CommandError("you cannot start and attach multiple containers at once")
        name = opts.containers[0]
        info = client.get(f"/containers/{name}/json")
        tty = bool(info["Config"].get("Tty"))
        keys = detach_keys(opts.detach_keys)
        attach = client.upgrade(
            "POST",
            f"/containers/{info['Id']}/attach",
            {"stream": True, "stdin": opts.interactive, "stdout": True, "stderr": True, "detachKeys": keys},
        )
        waiter = client.request("POST", f"/containers/{info['Id']}/wait", {"condition": "next-exit"})
        client.json("POST", f"/containers/{info['Id']}/start")
        detached = stream_attached(
            attach,
            tty,
            opts.interactive,
            lambda h, w: client.json("POST", f"/containers/{info['Id']}/resize", {"h": h, "w": w}),
            keys,
        )
        attach.close()
        if detached:
            waiter.close()
            return 0
        return int(exit_status(waiter).get("StatusCode", 0))
    return for_each(opts.containers, lambda name: client.json("POST", f"/containers/{name}/start"))


def stop(ctx: Context, prog: str, args: list[str]) -> int:
    p = parser(prog, f"{prog} [OPTIONS] CONTAINER [CONTAINER...]", "Stop one or more running containers")
    p.add_argument("containers", nargs="+")
    p.add_argument("-t", "--time", "--timeout", type=int, dest="timeout")
    p.add_argument("-s", "--signal")
    opts = p.parse_args(args)
    query = {"t": opts.timeout, "signal": opts.signal}
    return for_each(opts.containers, lambda name: ctx.client.json("POST", f"/containers/{name}/stop", query))


def restart(ctx: Context, prog: str, args: list[str]) -> int:
    p = parser(prog, f"{prog} [OPTIONS] CONTAINER [CONTAINER...]", "Restart one or more containers")
    p.add_argument("containers", nargs="+")
    p.add_argument("-t", "--time", "--timeout", type=int, dest="timeout")
    p.add_argument("-s", "--signal")
    opts = p.parse_args(args)
    query = {"t": opts.timeout, "signal": opts.signal}
    return for_each(
        opts.containers, lambda name: ctx.client.json("POST", f"/containers/{name}/restart", query)
    )


def kill(ctx: Context, prog: str, args: list[str]) -> int:
    p = parser(prog, f"{prog} [OPTIONS] CONTAINER [CONTAINER...]", "Kill one or more running containers")
    p.add_argument("containers", nargs="+")
    p.add_argument("-s", "--signal")
    opts = p.parse_args(args)
    query = {"signal": opts.signal}
    return for_each(opts.containers, lambda name: ctx.client.json("POST", f"/containers/{name}/kill", query))


def pause(ctx: Context, prog: str, args: list[str]) -> int:
    p = parser(prog, f"{prog} CONTAINER [CONTAINER...]", "Pause all processes within one or more containers")
    p.add_argument("containers", nargs="+")
    opts = p.parse_args(args)
    return for_each(opts.containers, lambda name: ctx.client.json("POST", f"/containers/{name}/pause"))


def unpause(ctx: Context, prog: str, args: list[str]) -> int:
    p = parser(
        prog, f"{prog} CONTAINER [CONTAINER...]", "Unpause all processes within one or more containers"
    )
    p.add_argument("containers", nargs="+")
    opts = p.parse_args(args)
    return for_each(opts.containers, lambda name: ctx.client.json("POST", f"/containers/{name}/unpause"))


def rm(ctx: Context, prog: str, args: list[str]) -> int:
    p = parser(prog, f"{prog} [OPTIONS] CONTAINER [CONTAINER...]", "Remove one or more containers")
    p.add_argument("containers", nargs="+")
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("-v", "--volumes", action="store_true")
    p.add_argument("-l", "--link", action="store_true")
    opts = p.parse_args(args)
    query = {"force": opts.force, "v": opts.volumes}
    return for_each(opts.containers, lambda name: ctx.client.json("DELETE", f"/containers/{name}", query))


def rename(ctx: Context, prog: str, args: list[str]) -> int:
    p = parser(prog, f"{prog} CONTAINER NEW_NAME", "Rename a container")
    p.add_argument("container")
    p.add_argument("new_name")
    opts = p.parse_args(args)
    ctx.client.json("POST", f"/containers/{opts.container}/rename", {"name": opts.new_name})
    return 0


def wait(ctx: Context, prog: str, args: list[str]) -> int:
    p = parser(
        prog,
        f"{prog} CONTAINER [CONTAINER...]",
        "Block until one or more containers stop, then print their exit codes",
    )
    p.add_argument("containers", nargs="+")
    opts = p.parse_args(args)
    failed = False
    for name in opts.containers:
        try:
            response = ctx.client.request("POST", f"/containers/{name}/wait")
            print(json.loads(response.read()).get("StatusCode"))
        except DaemonError as error:
            print_error(f"Error response from daemon: {error.message}")
            failed = True
    return 1 if failed else 0


def attach(ctx: Context, prog: str, args: list[str]) -> int:
    p = parser(
        prog,
        f"{prog} [OPTIONS] CONTAINER",
        "Attach local standard input, output, and error streams to a running container",
    )
    p.add_argument("container")
    p.add_argument("--no-stdin", action="store_true")
    p.add_argument("--sig-proxy", default="true")
    p.add_argument("--detach-keys")
    opts = p.parse_args(args)
    client = ctx.client
    info = client.get(f"/containers/{opts.container}/json")
    if not info["State"]["Running"]:
        raise CommandError("You cannot attach to a stopped container, start it first")
    stdin = bool(info["Config"].get("OpenStdin")) and not opts.no_stdin
    keys = detach_keys(opts.detach_keys)
    response = client.upgrade(
        "POST",
        f"/containers/{info['Id']}/attach",
        {"stream": True, "stdin": stdin, "stdout": True, "stderr": True, "detachKeys": keys},
    )
    tty = bool(info["Config"].get("Tty"))
    detached = stream_attached(
        response,
        tty,
        stdin,
        lambda h, w: client.json("POST", f"/containers/{info['Id']}/resize", {"h": h, "w": w}),
        keys,
    )
    response.close()
    if detached:
        return 0
    after = client.get(f"/containers/{info['Id']}/json")
    return 0 if after["State"]["Running"] else int(after["State"]["ExitCode"])


# -- ps, logs, inspect -------------------------------------------------------------------------

PS_TABLE = "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.CreatedAt}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}"
PS_DEFAULT = "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}"
PS_HEADER = {
    "ID": "CONTAINER ID",
    "Image": "IMAGE",
    "Command": "COMMAND",
    "CreatedAt": "CREATED AT",
    "RunningFor": "CREATED",
    "Status": "STATUS",
    "Ports": "PORTS",
    "Names": "NAMES",
    "Size": "SIZE",
    "Labels": "LABELS",
    "Mounts": "MOUNTS",
    "Networks": "NETWORKS",
    "State": "STATE",
    "LocalVolumes": "LOCAL VOLUMES",
}


def _ellipsis(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def ps_rows(containers: list[dict[str, Any]], no_trunc: bool, size: bool) -> list[dict[str, Any]]:
    from kapal.cli.commands.images import go_time
    from kapal.cli.commands.networks import format_ports

    rows = []
    now = time.time()
    for c in containers:
        command = c.get("Command", "")
        quoted = f'"{command if no_trunc else _ellipsis(command, 20)}"'
        image = c.get("Image", "")
        if not no_trunc and image.startswith("sha256:"):
            image = image[7:19]
        row = {
            "ID": c["Id"] if no_trunc else c["Id"][:12],
            "Image": image,
            "Command": quoted,
            "CreatedAt": go_time(c.get("Created", 0)),
            "RunningFor": human_duration(now - c.get("Created", now)) + " ago",
            "Status": c.get("Status", ""),
            "State": c.get("State", ""),
            "Ports": format_ports(c.get("Ports") or []),
            "Names": ",".join(n.lstrip("/") for n in c.get("Names") or []),
            "Labels": ",".join(f"{k}={v}" for k, v in sorted((c.get("Labels") or {}).items())),
            "Mounts": ",".join(
                name if no_trunc else _ellipsis(name, 15)
                for name in (m.get("Name") or m.get("Source", "") for m in c.get("Mounts") or [])
            ),
            "Networks": ",".join(sorted((c.get("NetworkSettings") or {}).get("Networks") or {})),
            "LocalVolumes": str(sum(1 for m in c.get("Mounts") or [] if m.get("Driver") == "local")),
            "Size": "",
        }
        if size:
            row["Size"] = f"{human_size(c.get('SizeRw', 0))} (virtual {human_size(c.get('SizeRootFs', 0))})"
        rows.append(sorted_row(row))
    return rows


def ps(ctx: Context, prog: str, args: list[str]) -> int:
    p = parser(prog, f"{prog} [OPTIONS]", "List containers")
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("-f", "--filter", action="append", default=[])
    p.add_argument("--format")
    p.add_argument("-n", "--last", type=int, default=-1)
    p.add_argument("-l", "--latest", action="store_true")
    p.add_argument("--no-trunc", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("-s", "--size", action="store_true")
    opts = p.parse_args(args)
    limit = 1 if opts.latest else opts.last
    query = {"all": opts.all, "size": opts.size, "filters": parse_filter_flags(opts.filter) or None}
    if limit > 0:
        query["limit"] = limit
    containers = ctx.client.get("/containers/json", query)
    if opts.quiet:
        for c in containers:
            print(c["Id"] if opts.no_trunc else c["Id"][:12])
        return 0
    default = PS_DEFAULT
    if opts.size:
        default += "\t{{.Size}}"
    output_rows(opts.format, default, PS_HEADER, ps_rows(containers, opts.no_trunc, opts.size))
    return 0


def logs(ctx: Context, prog: str, args: list[str]) -> int:
    p = parser(prog, f"{prog} [OPTIONS] CONTAINER", "Fetch the logs of a container")
    p.add_argument("container")
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("--since")
    p.add_argument("--until")
    p.add_argument("-n", "--tail", default="all")
    p.add_argument("-t", "--timestamps", action="store_true")
    p.add_argument("--details", action="store_true")
    opts = p.parse_args(args)
    from kapal.cli.commands.system import _parse_time_flag

    info = ctx.client.get(f"/containers/{opts.container}/json")
    query = {
        "stdout": True,
        "stderr": True,
        "follow": opts.follow,
        "timestamps": opts.timestamps,
        "tail": opts.tail,
        "since": _parse_time_flag(opts.since),
        "until": _parse_time_flag(opts.until),
    }
    response = ctx.client.request("GET", f"/containers/{info['Id']}/logs", query)
    _demux(response, bool(info["Config"].get("Tty")))
    return 0


def inspect(ctx: Context, prog: str, args: list[str]) -> int:
    p = parser(
        prog,
        f"{prog} [OPTIONS] CONTAINER [CONTAINER...]",
        "Display detailed information on one or more containers",
    )
    p.add_argument("containers", nargs="+")
    p.add_argument("-f", "--format")
    p.add_argument("-s", "--size", action="store_true")
    opts = p.parse_args(args)
    from kapal.cli.commands.images import inspect_each

    return inspect_each(
        ctx,
        opts.containers,
        lambda name: f"/containers/{name}/json",
        lambda name: f"Error: No such container: {name}",
        opts.format,
        {"size": opts.size},
    )


def exec_(ctx: Context, prog: str, args: list[str]) -> int:
    p = parser(
        prog, f"{prog} [OPTIONS] CONTAINER COMMAND [ARG...]", "Execute a command in a running container"
    )
    p.add_argument("container")
    p.add_argument("command", nargs="...")
    p.add_argument("-d", "--detach", action="store_true")
    p.add_argument("-i", "--interactive", action="store_true")
    p.add_argument("-t", "--tty", action="store_true")
    p.add_argument("-e", "--env", action="append", default=[])
    p.add_argument("--env-file", action="append", default=[])
    p.add_argument("-w", "--workdir")
    p.add_argument("-u", "--user")
    p.add_argument("--privileged", action="store_true")
    p.add_argument("--detach-keys")
    opts = p.parse_args(args)
    if not opts.command:
        raise CommandError(f'"{prog}" requires at least 2 arguments.', 125)
    env = []
    for path in opts.env_file:
        env += _read_env_file(path)
    env += _env(opts.env)
    keys = detach_keys(opts.detach_keys)
    body = {
        "Cmd": opts.command,
        "Env": env or None,
        "DetachKeys": keys,
        "Tty": opts.tty,
        "AttachStdin": opts.interactive and not opts.detach,
        "AttachStdout": not opts.detach,
        "AttachStderr": not opts.detach,
        "Privileged": opts.privileged,
    }
    if opts.workdir:
        body["WorkingDir"] = opts.workdir
    if opts.user:
        body["User"] = opts.user
    client = ctx.client
    exec_id = client.json("POST", f"/containers/{opts.container}/exec", None, body)["Id"]
    if opts.detach:
        client.json("POST", f"/exec/{exec_id}/start", None, {"Detach": True, "Tty": opts.tty})
        return 0
    try:
        response = client.upgrade("POST", f"/exec/{exec_id}/start", None, {"Detach": False, "Tty": opts.tty})
    except DaemonError as error:
        raise CommandError(
            f"Error response from daemon: {error.message}", _status_code(error.message)
        ) from None

    def resize(height: int, width: int) -> None:
        client.json("POST", f"/exec/{exec_id}/resize", {"h": height, "w": width})

    if stream_attached(response, opts.tty, opts.interactive, resize, keys):
        response.close()
        return 0
    response.close()
    for _ in range(100):  # the exit code lands a moment after the stream ends
        info = client.get(f"/exec/{exec_id}/json")
        if not info.get("Running") and info.get("ExitCode") is not None:
            return int(info["ExitCode"])
        time.sleep(0.02)
    return int(info.get("ExitCode") or 0)
