"""kapald's configuration: dockerd's flags and a ``daemon.json`` of the same keys.

As in dockerd, a setting may come from a flag or from the file but not both:
conflicting sources are an error, not a silent precedence rule.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kapal.errors import InvalidArgument

DEFAULT_SOCKET = "unix:///run/kapal/kapal.sock"
DEFAULT_DATA_ROOT = "/var/lib/kapal"
DEFAULT_EXEC_ROOT = "/run/kapal"
DEFAULT_CONFIG_FILE = "/etc/kapal/daemon.json"

# daemon.json key -> attribute; the keys dockerd uses.
FILE_KEYS = {
    "hosts": "hosts",
    "data-root": "data_root",
    "exec-root": "exec_root",
    "debug": "debug",
    "log-level": "log_level",
    "pidfile": "pidfile",
}
# Keys later parts of kapal read; accepted now so one daemon.json serves every version.
PASSTHROUGH_KEYS = {
    "runtimes",
    "default-runtime",
    "registry-mirrors",
    "insecure-registries",
    "bip",
    "bridge",
    "mtu",
    "default-address-pools",
    "max-concurrent-downloads",
    "max-concurrent-uploads",
    "log-driver",
    "log-opts",
    "live-restore",
    "default-ulimits",
    "storage-driver",
    "features",
    "builder",
    "labels",
}


@dataclass
class DaemonConfig:
    hosts: list[str] = field(default_factory=lambda: [DEFAULT_SOCKET])
    data_root: str = DEFAULT_DATA_ROOT
    exec_root: str = DEFAULT_EXEC_ROOT
    pidfile: str | None = None
    debug: bool = False
    log_level: str = "info"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pidfile_path(self) -> Path:
        return Path(self.pidfile) if self.pidfile else Path(self.exec_root) / "kapald.pid"

    def socket_paths(self) -> list[str]:
        paths = []
        for host in self.hosts:
            if host.startswith("unix://"):
                paths.append(host[len("unix://") :])
            elif host.startswith("/"):
                paths.append(host)
            else:
                raise InvalidArgument(f"unsupported host {host!r}: kapald listens on unix:// sockets only")
        return paths


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kapald", description="The kapal container engine daemon.")
    p.add_argument("-H", "--host", action="append", dest="hosts", help="daemon socket(s) to listen on")
    p.add_argument("--data-root", help=f"root of persistent state (default {DEFAULT_DATA_ROOT})")
    p.add_argument("--exec-root", help=f"root of runtime state (default {DEFAULT_EXEC_ROOT})")
    p.add_argument("--config-file", default=DEFAULT_CONFIG_FILE, help="daemon configuration file")
    p.add_argument("-p", "--pidfile", help="path of the pid file (default EXEC_ROOT/kapald.pid)")
    p.add_argument("-D", "--debug", action="store_true", default=None, help="enable debug mode")
    p.add_argument("-l", "--log-level", choices=["debug", "info", "warn", "error", "fatal"], help="log level")
    p.add_argument("-v", "--version", action="store_true", help="print version and exit")
    return p


def load(args: argparse.Namespace) -> DaemonConfig:
    config = DaemonConfig()
    file_values: dict[str, Any] = {}
    path = Path(args.config_file)
    if path.exists():
        try:
            file_values = json.loads(path.read_text() or "{}")
        except json.JSONDecodeError as error:
            raise InvalidArgument(f"unable to configure the daemon with file {path}: {error}") from None
        if not isinstance(file_values, dict):
            raise InvalidArgument(f"unable to configure the daemon with file {path}: not a JSON object")
        unknown = sorted(set(file_values) - set(FILE_KEYS) - PASSTHROUGH_KEYS)
        if unknown:
            raise InvalidArgument(
                f"unable to configure the daemon with file {path}: "
                f"the following directives don't match any configuration option: {', '.join(unknown)}"
            )
    flag_values = {
        "hosts": args.hosts,
        "data_root": args.data_root,
        "exec_root": args.exec_root,
        "pidfile": args.pidfile,
        "debug": args.debug,
        "log_level": args.log_level,
    }
    conflicts = [
        key for key, attr in FILE_KEYS.items() if key in file_values and flag_values.get(attr) is not None
    ]
    if conflicts:
        raise InvalidArgument(
            f"unable to configure the daemon with file {path}: the following directives are specified "
            f"both as a flag and in the configuration file: {', '.join(conflicts)}"
        )
    for key, attr in FILE_KEYS.items():
        if key in file_values:
            setattr(config, attr, file_values[key])
    for attr, value in flag_values.items():
        if value is not None:
            setattr(config, attr, value)
    config.extra = {key: value for key, value in file_values.items() if key in PASSTHROUGH_KEYS}
    if config.debug:
        config.log_level = "debug"
    return config
