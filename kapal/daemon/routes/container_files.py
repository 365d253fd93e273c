"""Routes for a container's files and processes: archive, changes, export, commit, top, stats, update.

Thin adapters from the Engine API to :mod:`kapal.container.filesystem` and
:mod:`kapal.container.processes`; the blocking work runs in worker threads
and large bodies stream in both directions, never whole in memory.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from typing import Any

from aiohttp import web

from kapal.container import filesystem, processes
from kapal.daemon.app import ENGINE, Routes, json_response, read_json_body
from kapal.daemon.streams import body_reader, iterate_in_thread
from kapal.errors import InvalidArgument, KapalError, NotFound

log = logging.getLogger("kapald")

PATH_STAT_HEADER = "X-Docker-Container-Path-Stat"
STATS_INTERVAL = 1.0
"""dockerd's collector samples once a second; a non-streamed answer is its second sample."""
_TAR_BUFFER = 8  # chunks in flight to a slow client (each up to 1 MiB)


def _service(request: web.Request) -> Any:
    return request.app[ENGINE].containers


def bool_value(value: str | None) -> bool:
    """dockerd's ``httputils.BoolValue``: anything but empty, 0, no, false and none is true."""
    return (value or "").strip().lower() not in ("", "0", "no", "false", "none")


def _bool_or_default(request: web.Request, key: str, default: bool) -> bool:
    if key not in request.query:
        return default
    return bool_value(request.query.get(key))


async def _send_tar(request: web.Request, response: web.StreamResponse, stream: filesystem.TarStream) -> None:
    """Stream a tar to the client from a worker thread; the stream is closed whatever happens.

    Once the status line is out an error can only be told by cutting the
    connection short, which tar readers report as an unexpected end.
    """
    try:
        await response.prepare(request)
    except BaseException:
        stream.close()
        raise

    def produce() -> Iterator[bytes]:
        try:
            yield from stream
        finally:
            stream.close()

    try:
        async for chunk in iterate_in_thread(produce, buffer=_TAR_BUFFER):
            await response.write(chunk)
        await response.write_eof()
    except ConnectionError:
        pass  # the client went away (`docker cp … - | head`)
    except Exception as error:  # the 200 is gone: cut the stream so the reader sees it is short
        if isinstance(error, KapalError):
            log.warning("%s %s failed after the response started: %s", request.method, request.path, error)
        else:
            log.exception("%s %s failed after the response started", request.method, request.path)
        if request.transport is not None:
            request.transport.close()


# -- archive ---------------------------------------------------------------------------------


async def archive_head(request: web.Request) -> web.Response:
    path_stat = await asyncio.to_thread(
        filesystem.archive_head, _service(request), request.match_info["id"], request.query.get("path", "")
    )
    return web.Response(status=200, headers={PATH_STAT_HEADER: filesystem.encode_path_stat(path_stat)})


async def archive_get(request: web.Request) -> web.StreamResponse:
    path_stat, stream = await asyncio.to_thread(
        filesystem.archive_get, _service(request), request.match_info["id"], request.query.get("path", "")
    )
    response = web.StreamResponse(
        headers={
            "Content-Type": "application/x-tar",
            PATH_STAT_HEADER: filesystem.encode_path_stat(path_stat),
        }
    )
    await _send_tar(request, response, stream)
    return response


async def archive_put(request: web.Request) -> web.Response:
    query = request.query
    reader = body_reader(request)
    await asyncio.to_thread(
        filesystem.archive_put,
        _service(request),
        request.match_info["id"],
        query.get("path", ""),
        reader,
        bool_value(query.get("noOverwriteDirNonDir")),
        bool_value(query.get("copyUIDGID")),
    )
    return web.Response(status=200)


# -- changes, export, commit -----------------------------------------------------------------


async def container_changes(request: web.Request) -> web.Response:
    result = await asyncio.to_thread(filesystem.changes, _service(request), request.match_info["id"])
    return json_response(result)


async def container_export(request: web.Request) -> web.StreamResponse:
    stream = await asyncio.to_thread(filesystem.export, _service(request), request.match_info["id"])
    response = web.StreamResponse(headers={"Content-Type": "application/x-tar"})
    await _send_tar(request, response, stream)
    return response


async def commit(request: web.Request) -> web.Response:
    query = request.query
    body = await read_json_body(request)
    # The body is an optional container Config (dockerd decodes it as a create request's).
    config = {key: value for key, value in body.items() if key not in ("HostConfig", "NetworkingConfig")}
    image_id = await asyncio.to_thread(
        filesystem.commit,
        _service(request),
        query.get("container", ""),
        query.get("repo", ""),
        query.get("tag", ""),
        query.get("comment", ""),
        query.get("author", ""),
        query.getall("changes", []),
        _bool_or_default(request, "pause", True),
        config or None,
    )
    return json_response({"Id": image_id}, status=201)


# -- top, stats, update ----------------------------------------------------------------------


async def container_top(request: web.Request) -> web.Response:
    result = await asyncio.to_thread(
        processes.top, _service(request), request.match_info["id"], request.query.get("ps_args", "")
    )
    return json_response(result)


async def container_stats(request: web.Request) -> web.StreamResponse:
    """One JSON sample a second (``stream``, the default), or one answer (``stream=false``).

    As dockerd's collector, a container that is not running gets samples
    holding only its name and ID, and the stream goes on until the client
    leaves or the container is removed. ``stream=false`` takes two samples a
    second apart and answers the second, so its ``precpu_stats`` gives a CPU
    percentage (dockerd primes the same way); ``one-shot`` answers the first
    sample at once.
    """
    service = _service(request)
    container = service.get(request.match_info["id"])
    stream = _bool_or_default(request, "stream", True)
    one_shot = bool_value(request.query.get("one-shot"))
    if stream and one_shot:
        raise InvalidArgument("cannot have stream=true and one-shot=true")
    if not stream:
        sample = await asyncio.to_thread(processes.stats, service, container.id)
        if not one_shot and sample["read"] != processes.ZERO_TIME:
            await asyncio.sleep(STATS_INTERVAL)
            sample = await asyncio.to_thread(processes.stats, service, container.id, sample)
        return json_response(sample)

    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    previous: dict[str, Any] | None = None
    try:
        while request.transport is not None and not request.transport.is_closing():
            try:
                sample = await asyncio.to_thread(processes.stats, service, container.id, previous)
            except NotFound:
                break  # removed: dockerd stops collecting for it and ends the stream
            await response.write(json.dumps(sample, separators=(",", ":")).encode() + b"\n")
            previous = sample
            await asyncio.sleep(STATS_INTERVAL)
        await response.write_eof()
    except ConnectionError:
        pass  # the client left (`docker stats` interrupted)
    return response


async def container_update(request: web.Request) -> web.Response:
    body = await read_json_body(request)
    result = await asyncio.to_thread(processes.update, _service(request), request.match_info["id"], body)
    return json_response(result)


def register(routes: Routes) -> None:
    routes.head("/containers/{id}/archive", archive_head)
    routes.get("/containers/{id}/archive", archive_get)
    routes.add("PUT", "/containers/{id}/archive", archive_put)
    routes.get("/containers/{id}/changes", container_changes)
    routes.get("/containers/{id}/export", container_export)
    routes.post("/commit", commit)
    routes.get("/containers/{id}/top", container_top)
    routes.get("/containers/{id}/stats", container_stats)
    routes.post("/containers/{id}/update", container_update)
