"""Assemble a registry from its settings and serve it on a listening socket until signalled.

aiohttp's runner gives the graceful shutdown: on SIGTERM/SIGINT it stops accepting,
lets requests in flight finish for ``shutdown_timeout`` seconds, then closes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket
import ssl
from collections.abc import Callable

from aiohttp import web

from kapal.errors import InvalidArgument
from kapal.registry.app import Registry, access_logger_for, make_app
from kapal.registry.metrics import Metrics
from kapal.registry.storage import RegistryStorage
from kapal.registry.uploads import UploadSessions

log = logging.getLogger("kapal.registry")


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as error:
        raise InvalidArgument(f"cannot load TLS certificate {cert} / key {key}: {error}") from None
    return context


def build(settings: dict[str, object]) -> tuple[web.Application, Registry]:
    storage = RegistryStorage(str(settings["root"]))
    registry = Registry(
        storage=storage,
        uploads=UploadSessions(storage),
        metrics=Metrics(),
        # A pull-through cache mirrors upstream; pushes to it would be lost at the next refresh.
        read_only=bool(settings["read_only"] or settings["proxy_remote"]),
    )
    extra_routes: list[web.RouteDef] = []
    if settings["htpasswd"] or settings["token_key"]:
        from kapal.registry.auth import make_authorizer

        registry.authorizer, extra_routes = make_authorizer(settings)
    if settings["proxy_remote"]:
        from kapal.registry.proxy import Upstream

        registry.upstream = Upstream(
            storage,
            str(settings["proxy_remote"]),
            username=settings["proxy_username"],  # type: ignore[arg-type]
            password=settings["proxy_password"],  # type: ignore[arg-type]
            tag_ttl=float(settings["proxy_ttl"]),  # type: ignore[arg-type]
            ca_file=settings["proxy_ca"],  # type: ignore[arg-type]
        )
    app = make_app(registry, extra_routes)
    if registry.upstream is not None:
        app.on_cleanup.append(registry.upstream.close)
    return app, registry


def prepare(settings: dict[str, object]) -> Callable[[socket.socket], None]:
    """Check the settings and build the registry; the result serves it on a socket.

    Called before forking workers, so bad settings fail once, in the parent, with one message.
    """
    app, registry = build(settings)
    context = None
    if settings["tls_cert"] or settings["tls_key"]:
        if not (settings["tls_cert"] and settings["tls_key"]):
            raise InvalidArgument("--tls-cert and --tls-key go together")
        context = tls_context(str(settings["tls_cert"]), str(settings["tls_key"]))
    access = logging.getLogger("kapal.registry.access")
    access.disabled = not settings["access_log"]
    timeout = float(settings["shutdown_timeout"])  # type: ignore[arg-type]

    def run(sock: socket.socket) -> None:
        asyncio.run(_serve(app, registry, sock, context, access, timeout))

    return run


async def _serve(
    app: web.Application,
    registry: Registry,
    sock: socket.socket,
    context: ssl.SSLContext | None,
    access: logging.Logger,
    shutdown_timeout: float,
) -> None:
    """Serve until SIGTERM/SIGINT; then stop accepting and let requests in flight finish."""
    runner = web.AppRunner(
        app,
        access_log=access,
        access_log_class=access_logger_for(registry),
        shutdown_timeout=shutdown_timeout,
    )
    await runner.setup()
    site = web.SockSite(runner, sock, ssl_context=context)
    await site.start()
    address = sock.getsockname()
    log.info(json.dumps({"msg": "serving", "address": f"{address[0]}:{address[1]}", "tls": bool(context)}))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await site.stop()
    deadline = loop.time() + shutdown_timeout
    while registry.in_flight > 0 and loop.time() < deadline:
        await asyncio.sleep(0.02)
    log.info(json.dumps({"msg": "stopped", "unfinished": registry.in_flight}))
    await runner.cleanup()
