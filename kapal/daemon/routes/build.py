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
import threading
from typing import Any

from aiohttp import web

from kapal.build.builder import BuildError, BuildOptions
from kapal.daemon.app import ENGINE, Routes, json_response
from kapal.daemon.streams import json_progress
from kapal.errors import InvalidArgument, NotImplementedYet


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
    Its first megabyte goes over as it comes, though: the Dockerfile is usually in it,
    and the build starts on it while the rest is still arriving.
    """

    _EAGER = 1 << 20

    def __init__(self, content: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._content = content
        self._loop = loop
        self._received = 0

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
            if self._received < self._EAGER:
                break
        data = b"".join(parts)
        self._received += len(data)
        return data

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
    body = _ContextBody(request.content, asyncio.get_running_loop())  # buffered where it is decoded
    service = engine.builder
    loop = service.loop = asyncio.get_running_loop()
    preparing = asyncio.ensure_future(asyncio.to_thread(service.prepare, body, options))
    try:
        prepared = await asyncio.shield(preparing)
    except asyncio.CancelledError:  # the client went away: what prepare still returns is dropped

        def drop(done: asyncio.Future[Any]) -> None:
            if not done.cancelled() and done.exception() is None:
                loop.run_in_executor(None, service.abandon, done.result())

        preparing.add_done_callback(drop)
        raise
    started = threading.Event()

    def work(emit: Any) -> str:
        started.set()
        try:
            return service.run_build(prepared, emit)
        except BuildError as error:
            detail: dict[str, Any] = {"message": error.message}
            if error.code is not None:
                detail["code"] = error.code
            emit({"errorDetail": detail, "error": error.message})
            return ""

    # a client that goes away cancels its build, as dockerd cancels the build's context
    try:
        response, _ = await json_progress(request, work, cancel=prepared.cancellation.cancel)
    finally:
        if not started.is_set():  # gone before the response started (the build may be running)
            loop.run_in_executor(None, service.abandon, prepared)
    return response


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
