"""``kapald``: start the engine and serve the Engine API on its Unix sockets."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import signal
import sys
from pathlib import Path

from kapal import __version__
from kapal.daemon import config as daemon_config
from kapal.errors import KapalError

log = logging.getLogger("kapald")


def _write_pidfile(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        old = int(path.read_text().strip())
    except (OSError, ValueError):
        old = 0
    if old and old != os.getpid() and Path(f"/proc/{old}").exists():
        cmdline = Path(f"/proc/{old}/cmdline").read_bytes()
        if b"kapald" in cmdline:
            raise KapalError(f"pid file found, ensure kapald is not running or delete {path}")
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{os.getpid()}\n")
    os.replace(tmp, path)


async def serve(cfg: daemon_config.DaemonConfig) -> None:
    from aiohttp import web

    from kapal.container.service import RuntimeOptions
    from kapal.daemon.app import create_app
    from kapal.distribution.client import RegistryOptions
    from kapal.engine import Engine
    from kapal.network.service import NetworkOptions
    from kapal.runtime import cgroups

    # Blocking work runs in threads, and some of it lasts (a `logs -f`, a `stop -t 30`): the default
    # pool (cores + 4 threads) would let six such clients stall every other request.
    asyncio.get_running_loop().set_default_executor(
        concurrent.futures.ThreadPoolExecutor(max_workers=128, thread_name_prefix="kapald")
    )
    sockets = cfg.socket_paths()
    options = RuntimeOptions(
        default_runtime=cfg.extra.get("default-runtime", "crun"), runtimes=cfg.extra.get("runtimes", {})
    )
    if options.default_runtime == "crun":
        layout = cgroups.fix_hybrid_for_crun(cgroups.detect())
        if layout.hybrid and layout.unified_controllers:
            log.warning(
                "cgroup2 still holds %s on this hybrid host and crun refuses that: using runc by default",
                ", ".join(layout.unified_controllers),
            )
            options.default_runtime = "runc"
    engine = Engine(cfg.data_root, cfg.exec_root, options, NetworkOptions.from_config(cfg.extra))
    engine.registry_options = RegistryOptions.from_config(cfg.extra)
    Path(cfg.exec_root).mkdir(parents=True, exist_ok=True)
    _write_pidfile(cfg.pidfile_path)
    await asyncio.to_thread(engine.recover)
    app = create_app(engine)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=5)
    await runner.setup()
    for path in sockets:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        if os.path.exists(path):
            os.unlink(path)  # the data-root lock proved no other kapald owns this state
        site = web.UnixSite(runner, path)
        await site.start()
        os.chmod(path, 0o660)
    log.info("kapald %s listening on %s (data root %s)", __version__, ", ".join(sockets), cfg.data_root)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("kapald shutting down")
        await runner.cleanup()
        for path in sockets:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        try:
            cfg.pidfile_path.unlink()
        except FileNotFoundError:
            pass
        await engine.close_distribution()
        engine.close()


def main(argv: list[str] | None = None) -> int:
    args = daemon_config.parser().parse_args(argv)
    if args.version:
        print(f"kapald version {__version__}")
        return 0
    try:
        cfg = daemon_config.load(args)
    except KapalError as error:
        print(f"kapald: {error.message}", file=sys.stderr)
        return 1
    level = {"warn": "WARNING", "fatal": "CRITICAL"}.get(cfg.log_level, cfg.log_level.upper())
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    if os.geteuid() != 0:
        print("kapald: must run as root (it mounts filesystems and creates device nodes)", file=sys.stderr)
        return 1
    loop = asyncio.new_event_loop()
    status = 0
    try:
        loop.run_until_complete(serve(cfg))
    except KapalError as error:
        print(f"kapald: {error.message}", file=sys.stderr)
        status = 1
    # Not asyncio.run: it joins every worker thread, and a thread still serving a client
    # (a follow, a wait) would hold the shutdown hostage. State is committed; leave now.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    sys.exit(main())
