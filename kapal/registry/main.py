"""``kapal-registry``: serve a registry from a directory, or collect its garbage.

Settings come from flags, or from a TOML file (``--config``) whose keys are the long
flag names with ``-`` or ``_`` (``listen = "0.0.0.0:5000"``, ``root = "/srv/registry"``);
a flag given on the command line wins over the file.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

from kapal.errors import KapalError

# Flags, their defaults, and how a config file value is read.
_SERVE_DEFAULTS: dict[str, object] = {
    "listen": "127.0.0.1:5000",
    "root": None,
    "workers": 0,
    "tls_cert": None,
    "tls_key": None,
    "htpasswd": None,
    "policy": None,
    "token_key": None,
    "token_realm": None,
    "token_service": "kapal-registry",
    "token_ttl": 300,
    "proxy_remote": None,
    "proxy_username": None,
    "proxy_password": None,
    "proxy_ttl": 3600.0,
    "proxy_ca": None,
    "read_only": False,
    "access_log": True,
    "shutdown_timeout": 30.0,
    "log_level": "info",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kapal-registry", description="An OCI distribution registry.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the registry")
    serve.add_argument("--config", help="TOML file with any of the settings below")
    serve.add_argument("--listen", help="address:port to listen on (default 127.0.0.1:5000)")
    serve.add_argument("--root", help="directory holding the registry's data")
    serve.add_argument(
        "--workers", type=int, help="serving processes sharing the port (default 0: one per CPU)"
    )
    serve.add_argument("--tls-cert", help="PEM certificate (chain) to serve HTTPS with")
    serve.add_argument("--tls-key", help="PEM private key of --tls-cert")
    serve.add_argument("--htpasswd", help="htpasswd file (bcrypt) of the users allowed in")
    serve.add_argument("--policy", help="TOML access policy: per user and repository pull/push/delete")
    serve.add_argument(
        "--token-key", help="PEM private key (EC P-256 or RSA): issue and require bearer tokens"
    )
    serve.add_argument("--token-realm", help="URL of the token service clients are sent to")
    serve.add_argument("--token-service", help="the service name in tokens (default kapal-registry)")
    serve.add_argument("--token-ttl", type=int, help="token lifetime in seconds (default 300)")
    serve.add_argument("--proxy-remote", help="mirror this upstream registry (pull-through cache)")
    serve.add_argument("--proxy-username", help="user name for the upstream")
    serve.add_argument("--proxy-password", help="password for the upstream")
    serve.add_argument("--proxy-ca", help="PEM CA bundle to trust for an https upstream")
    serve.add_argument("--proxy-ttl", type=float, help="seconds a cached tag is trusted (default 3600)")
    serve.add_argument("--read-only", action="store_true", default=None, help="refuse every write")
    serve.add_argument("--no-access-log", dest="access_log", action="store_false", default=None)
    serve.add_argument("--shutdown-timeout", type=float, help="seconds in-flight requests get at shutdown")
    serve.add_argument("--log-level", help="debug, info, warning or error")
    keygen = sub.add_parser("keygen", help="write a new EC P-256 key for --token-key")
    keygen.add_argument("path")
    gc = sub.add_parser("gc", help="delete blobs no manifest refers to")
    gc.add_argument("--root", required=True)
    gc.add_argument("--dry-run", action="store_true", help="only list what would be deleted")
    gc.add_argument(
        "--grace", type=float, default=3600.0, help="keep unreferenced blobs younger than this many seconds"
    )
    gc.add_argument("--upload-ttl", type=float, default=86400.0, help="remove uploads idle this long")
    gc.add_argument("--delete-untagged", action="store_true", help="also delete manifests no tag reaches")
    return parser


def serve_settings(args: argparse.Namespace) -> dict[str, object]:
    settings = dict(_SERVE_DEFAULTS)
    if args.config:
        with open(args.config, "rb") as file:
            for key, value in tomllib.load(file).items():
                key = key.replace("-", "_")
                if key not in settings:
                    raise KapalError(f"{args.config}: unknown setting {key!r}")
                settings[key] = value
    for key in settings:
        value = getattr(args, key, None)
        if value is not None:
            settings[key] = value
    if not settings["root"]:
        raise KapalError("--root is required (or root = ... in the config file)")
    return settings


def _listen_socket(listen: str) -> socket.socket:
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, int(port)))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def _run_workers(run: Callable[[socket.socket], None], workers: int, sock: socket.socket) -> int:
    """Fork the serving processes; forward SIGTERM/SIGINT to them and wait for all."""
    children = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                run(sock)
            except BaseException:  # noqa: BLE001
                logging.getLogger("kapal.registry").exception("worker failed")
                code = 1
            os._exit(code)
        children.append(pid)

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            try:
                os.kill(child, signum)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = 0
    for child in children:
        while True:
            try:
                _, code = os.waitpid(child, 0)
                break
            except ChildProcessError:
                code = 0
                break
            except InterruptedError:
                continue
        status = status or os.waitstatus_to_exitcode(code)
    return status


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "keygen":
            from kapal.registry.auth import generate_key

            generate_key(args.path)
            return 0
        if args.command == "gc":
            from kapal.registry.gc import collect_garbage

            logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
            report = collect_garbage(
                Path(args.root),
                dry_run=args.dry_run,
                grace=args.grace,
                upload_ttl=args.upload_ttl,
                delete_untagged=args.delete_untagged,
            )
            verb = "would delete" if args.dry_run else "deleted"
            for digest in report.blobs:
                print(f"{verb} blob {digest}")
            for name, digest in report.manifests:
                print(f"{verb} manifest {name}@{digest}")
            print(
                f"{len(report.marked)} blobs in use, {len(report.blobs)} {verb}, "
                f"{report.kept_young} kept as younger than {args.grace:g}s, "
                f"{len(report.uploads)} stale uploads {'found' if args.dry_run else 'removed'}"
            )
            return 0
        settings = serve_settings(args)
        logging.basicConfig(level=str(settings["log_level"]).upper(), format="%(message)s", stream=sys.stderr)
        if int(settings["workers"]) == 0:  # type: ignore[arg-type]
            settings["workers"] = len(os.sched_getaffinity(0))
        from kapal.registry.server import prepare

        run = prepare(settings)
        sock = _listen_socket(str(settings["listen"]))
        workers = int(settings["workers"])  # type: ignore[arg-type]
        if workers <= 1:
            run(sock)
            return 0
        return _run_workers(run, workers, sock)
    except KapalError as error:
        print(f"kapal-registry: {error.message}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"kapal-registry: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
