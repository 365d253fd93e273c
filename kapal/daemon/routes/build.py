"""Build routes: ``POST /build`` (the classic builder's API) and ``POST /build/prune``.

The context is received and the Dockerfile parsed before the response starts,
so a missing Dockerfile or a parse error is an HTTP error (as dockerd answers
them); from the first step on, progress and errors are Docker's JSON stream.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import logging
from typing import Any

from aiohttp import web

from kapal.build.builder import BuildError, BuildOptions
from kapal.daemon.app import ENGINE, Routes, json_response
from kapal.daemon.streams import error_message, json_line
from kapal.errors import InvalidArgument, KapalError, NotImplementedYet

log = logging.getLogger("kapald")


def _bool(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes", "on")


def _json_query(request: web.Request, name: str, default: Any) -> Any:
    text = request.query.get(name)
    if not text:
        return default
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidArgument(f"invalid {name} parameter: {error}") from None


def build_options(request: web.Request) -> BuildOptions:
    query = request.query
    if query.get("remote"):
        raise NotImplementedYet("building from a remote URL is not supported: send the context as the body")
    build_args = _json_query(request, "buildargs", {}) or {}
    labels = _json_query(request, "labels", {}) or {}
    cache_from = _json_query(request, "cachefrom", []) or []
    if not isinstance(build_args, dict) or not isinstance(labels, dict) or not isinstance(cache_from, list):
        raise InvalidArgument("buildargs and labels must be JSON objects, cachefrom a JSON array")
    return BuildOptions(
        tags=[tag for tag in query.getall("t", []) if tag],
        dockerfile=query.get("dockerfile") or "Dockerfile",
        build_args={str(k): (None if v is None else str(v)) for k, v in build_args.items()},
        labels={str(k): str(v) for k, v in labels.items()},
        target=query.get("target", ""),
        no_cache=_bool(query.get("nocache")),
        pull=_bool(query.get("pull")),
        rm=query.get("rm") is None or _bool(query.get("rm")),
        force_rm=_bool(query.get("forcerm")),
        quiet=_bool(query.get("q")),
        network=query.get("networkmode", ""),
        platform=query.get("platform", ""),
        cache_from=[str(item) for item in cache_from],
    )


class _ContextBody(io.RawIOBase):
    """The request body for the builder's thread, a megabyte per hop to the event loop.

    A context is tens of megabytes; aiohttp hands the body over in pieces of at most
    its buffer (~128 kB), and a thread hop per piece would cost more than the parsing.
    """

    def __init__(self, content: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._content = content
        self._loop = loop

    def readable(self) -> bool:
        return True

    async def _fill(self, size: int) -> bytes:
        parts = []
        wanted = size
        while wanted > 0:
            data = await self._content.read(wanted)
            if not data:
                break
            parts.append(data)
            wanted -= len(data)
        return b"".join(parts)

    def readinto(self, buffer: Any) -> int:
        data = asyncio.run_coroutine_threadsafe(self._fill(len(buffer)), self._loop).result()
        buffer[: len(data)] = data
        return len(data)


def _secrets(header: str) -> dict[str, bytes]:
    """``kapal build --secret``: ids and contents for RUN --mount=type=secret (kapal's own header)."""
    if not header:
        return {}
    try:
        document = json.loads(base64.b64decode(header))
        return {str(key): base64.b64decode(value) for key, value in document.items()}
    except (ValueError, TypeError, AttributeError, binascii.Error):
        raise InvalidArgument("invalid X-Kapal-Build-Secrets header") from None


async def build(request: web.Request) -> web.StreamResponse:
    engine = request.app[ENGINE]
    options = build_options(request)
    if request.query.get("version") == "2":
        raise NotImplementedYet("BuildKit (version=2) is not supported: build with DOCKER_BUILDKIT=0")
    options.registry_config = request.headers.get("X-Registry-Config", "")
    options.secrets = _secrets(request.headers.get("X-Kapal-Build-Secrets", ""))
    body = io.BufferedReader(_ContextBody(request.content, asyncio.get_running_loop()), buffer_size=1 << 20)
    service = engine.builder
    service.loop = asyncio.get_running_loop()
    prepared = await asyncio.to_thread(service.prepare, body, options)

    def work(emit: Any) -> str:
        try:
            return service.run_build(prepared, emit)
        except BuildError as error:
            detail: dict[str, Any] = {"message": error.message}
            if error.code is not None:
                detail["code"] = error.code
            emit({"errorDetail": detail, "error": error.message})
            return ""

    return await _stream(request, work, prepared.cancellation)


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _stream(request: web.Request, work: Any, cancellation: Any) -> web.StreamResponse:
    """Run the build in a thread, its messages streamed as JSON lines; a client that goes away
    cancels it (its RUN container killed, its files removed), as dockerd cancels a build whose
    request context ends. An error after the 200 went out is sent in-band."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)

    def emit(message: dict[str, Any]) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, message)

    def run() -> str:
        try:
            return work(emit)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, None)

    task = asyncio.ensure_future(asyncio.to_thread(run))
    getter: asyncio.Future[Any] | None = asyncio.ensure_future(queue.get())
    try:
        while True:
            assert getter is not None
            done, _ = await asyncio.wait({getter}, timeout=0.5)
            if not done:
                if _client_gone(request):
                    break
                continue
            message = getter.result()
            if message is None:
                getter = None
                break
            getter = asyncio.ensure_future(queue.get())
            await response.write(json_line(message))
        if getter is not None:  # the client went away
            _abandon(getter, task, cancellation)
            return response
        try:
            await task
        except Exception as error:  # the status line is gone already
            if not isinstance(error, KapalError):
                log.exception("error in build")
            await response.write(json_line(error_message(error)))
        await response.write_eof()
    except ConnectionError:
        _abandon(getter, task, cancellation)
    except asyncio.CancelledError:
        _abandon(getter, task, cancellation)
        raise
    return response


def _abandon(getter: asyncio.Future[Any] | None, task: asyncio.Future[Any], cancellation: Any) -> None:
    """Cancel the build; its thread cleans up and ends on its own."""
    if getter is not None:
        getter.cancel()
    cancellation.cancel()
    task.add_done_callback(lambda t: t.cancelled() or t.exception())


async def prune(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    keep = request.query.get("keep-storage") or request.query.get("reserved-space") or "0"
    try:
        keep_storage = int(keep)
    except ValueError:
        raise InvalidArgument(f"invalid keep-storage {keep!r}") from None
    removed, reclaimed = await asyncio.to_thread(engine.builder.prune, True, keep_storage)
    return json_response({"CachesDeleted": removed or None, "SpaceReclaimed": reclaimed})


def register(routes: Routes) -> None:
    routes.post("/build", build)
    routes.post("/build/prune", prune)
