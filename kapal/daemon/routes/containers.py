"""Container routes: thin adapters from the Engine API to the container service.

JSON shapes are Docker's (``ContainerSummary``, ``ContainerInspectResponse``);
attach and logs speak the multiplexed (or, with a TTY, raw) stream format.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from kapal.container import detach_keys
from kapal.container import logs as container_logs
from kapal.container.model import EXITED, PAUSED, RESTARTING, RUNNING, Container, parse_rfc3339
from kapal.container.mounts import container_mounts_json
from kapal.container.service import NotModified
from kapal.daemon.app import ENGINE, Routes, api_version, json_response
from kapal.daemon.filters import check_keys, labels_match, parse_filters
from kapal.daemon.hijack import STDERR, STDOUT, HijackedConnection, hijack
from kapal.daemon.routes.networks import network_settings_json, ports_summary
from kapal.daemon.streams import frame_log_entry, iterate_in_thread
from kapal.errors import InvalidArgument, KapalError, NotFound

PIPE_TO_STREAM = {2: STDOUT, 3: STDERR}

HOST_CONFIG_DEFAULTS: dict[str, Any] = {
    "Binds": None,
    "ContainerIDFile": "",
    "LogConfig": {"Type": "json-file", "Config": {}},
    "NetworkMode": "bridge",
    "PortBindings": {},
    "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
    "AutoRemove": False,
    "VolumeDriver": "",
    "VolumesFrom": None,
    "CapAdd": None,
    "CapDrop": None,
    "CgroupnsMode": "host",
    "Dns": [],
    "DnsOptions": [],
    "DnsSearch": [],
    "ExtraHosts": None,
    "GroupAdd": None,
    "IpcMode": "private",
    "Cgroup": "",
    "Links": None,
    "OomScoreAdj": 0,
    "PidMode": "",
    "Privileged": False,
    "PublishAllPorts": False,
    "ReadonlyRootfs": False,
    "SecurityOpt": None,
    "UTSMode": "",
    "UsernsMode": "",
    "ShmSize": 67108864,
    "Runtime": "crun",
    "Isolation": "",
    "CpuShares": 0,
    "Memory": 0,
    "NanoCpus": 0,
    "CgroupParent": "",
    "BlkioWeight": 0,
    "CpuPeriod": 0,
    "CpuQuota": 0,
    "CpusetCpus": "",
    "CpusetMems": "",
    "Devices": [],
    "MemoryReservation": 0,
    "MemorySwap": 0,
    "MemorySwappiness": None,
    "OomKillDisable": None,
    "PidsLimit": None,
    "Ulimits": None,
    "Init": None,
    "Tmpfs": None,
    "Mounts": None,
    "MaskedPaths": None,
    "ReadonlyPaths": None,
}


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes")


def _service(request: web.Request) -> Any:
    return request.app[ENGINE].containers


def command_line(container: Container) -> str:
    return " ".join(container.args)


def _mounts(container: Container, service: Any) -> list[dict[str, Any]]:
    """Docker's ``MountPoint`` objects of the container (inspect's and ps's ``Mounts``)."""
    return container_mounts_json(container, service.volumes) if service.volumes is not None else []


def summary(container: Container, service: Any, with_size: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "Id": container.id,
        "Names": [f"/{container.name}"],
        "Image": container.image,
        "ImageID": container.image_id,
        "Command": command_line(container),
        "Created": int(parse_rfc3339(container.created)),
        "Ports": ports_summary(container),
        "Labels": container.labels,
        "State": container.state.status,
        "Status": container.status_text(),
        "HostConfig": {"NetworkMode": container.host_config.get("NetworkMode") or "bridge"},
        "NetworkSettings": {"Networks": network_settings_json(container)["Networks"]},
        "Mounts": _mounts(container, service),
    }
    if with_size:
        out["SizeRw"] = service.usage(container)
        out["SizeRootFs"] = out["SizeRw"] + service.images.get_by_id(container.image_id).size
    return out


def inspect_json(
    container: Container, service: Any, with_size: bool = False, short_id_alias: bool = False
) -> dict[str, Any]:
    directory = service.path(container)
    host_config = dict(HOST_CONFIG_DEFAULTS)
    host_config.update(container.host_config)
    image = service.images.get_by_id(container.image_id)
    lowers = [str(service.layers.path(diff_id)) for diff_id, _ in reversed(image.layers)]
    out: dict[str, Any] = {
        "Id": container.id,
        "Created": container.created,
        "Path": container.args[0] if container.args else "",
        "Args": container.args[1:],
        "State": container.state.to_json(),
        "Image": container.image_id,
        "ResolvConfPath": str(directory / "resolv.conf"),
        "HostnamePath": str(directory / "hostname"),
        "HostsPath": str(directory / "hosts"),
        "LogPath": str(directory / "ctr.log"),
        "Name": f"/{container.name}",
        "RestartCount": container.restart_count,
        "Driver": "overlay2",
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": list(container.exec_ids) or None,
        "HostConfig": host_config,
        "GraphDriver": {
            "Name": "overlay2",
            "Data": {
                "LowerDir": ":".join(lowers),
                "MergedDir": str(directory / "rootfs"),
                "UpperDir": str(directory / "upper"),
                "WorkDir": str(directory / "work"),
            },
        },
        "Mounts": _mounts(container, service),
        "Config": container.config,
        "NetworkSettings": network_settings_json(container, short_id_alias),
    }
    if with_size:
        out["SizeRw"] = service.usage(container)
        out["SizeRootFs"] = out["SizeRw"] + image.size
    return out


CONTAINER_FILTERS = {
    "id",
    "name",
    "label",
    "status",
    "ancestor",
    "exited",
    "before",
    "since",
    "health",
    "network",
    "volume",
    "publish",
    "expose",
    "is-task",
}
STATUSES = {"created", "restarting", "running", "removing", "paused", "exited", "dead"}


def _matches(container: Container, filters: dict[str, list[str]], service: Any) -> bool:
    if "id" in filters and not any(container.id.startswith(v) for v in filters["id"]):
        return False
    if "name" in filters and not any(v.lstrip("/") in container.name for v in filters["name"]):
        return False
    if "label" in filters and not labels_match(container.labels, filters["label"]):
        return False
    if "status" in filters:
        for status in filters["status"]:
            if status not in STATUSES:
                raise InvalidArgument(f"invalid filter 'status={status}'")
        if container.state.status not in filters["status"]:
            return False
    if "exited" in filters:
        if container.state.status != EXITED:
            return False
        if str(container.state.exit_code) not in filters["exited"]:
            return False
    if "ancestor" in filters:
        wanted = set()
        for name in filters["ancestor"]:
            try:
                wanted.add(service.images.resolve(name))
            except NotFound:
                continue
        if container.image_id not in wanted and container.image not in filters["ancestor"]:
            return False
    if "health" in filters:
        health = (container.state.health or {}).get("Status", "none")
        if health not in filters["health"]:
            return False
    if "volume" in filters:
        wanted = set(filters["volume"])
        if not any(
            m.get("Name") in wanted or m["Destination"] in wanted for m in _mounts(container, service)
        ):
            return False
    for key, newer in (("before", False), ("since", True)):
        for ref in filters.get(key, []):
            pivot = service.get(ref).created
            if (container.created <= pivot) if newer else (container.created >= pivot):
                return False
    return True


async def list_containers(request: web.Request) -> web.Response:
    service = _service(request)
    filters = parse_filters(request.query.get("filters"))
    check_keys(filters, CONTAINER_FILTERS)
    show_all = _truthy(request.query.get("all"))
    limit = int(request.query.get("limit") or -1)
    if limit > 0:
        show_all = True
    with_size = _truthy(request.query.get("size"))
    containers = [
        c
        for c in service.list()
        if (show_all or c.state.status in (RUNNING, PAUSED, RESTARTING)) and _matches(c, filters, service)
    ]
    if limit > 0:
        containers = containers[:limit]
    result = await asyncio.to_thread(lambda: [summary(c, service, with_size) for c in containers])
    return json_response(result)


async def inspect_container(request: web.Request) -> web.Response:
    service = _service(request)
    container = service.get(request.match_info["id"])
    with_size = _truthy(request.query.get("size"))
    # Before API 1.45 a container's short ID was one of its aliases (docker-compose 1.x relies on it).
    short_id_alias = api_version(request) < (1, 45)
    return json_response(await asyncio.to_thread(inspect_json, container, service, with_size, short_id_alias))


async def create_container(request: web.Request) -> web.Response:
    service = _service(request)
    try:
        body = await request.json()
    except json.JSONDecodeError as error:
        raise InvalidArgument(f"invalid JSON body: {error}") from None
    if not isinstance(body, dict):
        raise InvalidArgument("invalid JSON body: want an object")
    container = await asyncio.to_thread(service.create, body, request.query.get("name") or None)
    return json_response({"Id": container.id, "Warnings": []}, status=201)


async def start_container(request: web.Request) -> web.Response:
    try:
        await asyncio.to_thread(_service(request).start, request.match_info["id"])
    except NotModified:
        return web.Response(status=304)
    return web.Response(status=204)


def _timeout(request: web.Request) -> int | None:
    value = request.query.get("t", request.query.get("timeout"))
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise InvalidArgument(f"invalid timeout {value!r}") from None


async def stop_container(request: web.Request) -> web.Response:
    try:
        await asyncio.to_thread(
            _service(request).stop, request.match_info["id"], _timeout(request), request.query.get("signal")
        )
    except NotModified:
        return web.Response(status=304)
    return web.Response(status=204)


async def restart_container(request: web.Request) -> web.Response:
    await asyncio.to_thread(
        _service(request).restart, request.match_info["id"], _timeout(request), request.query.get("signal")
    )
    return web.Response(status=204)


async def kill_container(request: web.Request) -> web.Response:
    await asyncio.to_thread(_service(request).kill, request.match_info["id"], request.query.get("signal"))
    return web.Response(status=204)


async def pause_container(request: web.Request) -> web.Response:
    await asyncio.to_thread(_service(request).pause, request.match_info["id"])
    return web.Response(status=204)


async def unpause_container(request: web.Request) -> web.Response:
    await asyncio.to_thread(_service(request).unpause, request.match_info["id"])
    return web.Response(status=204)


async def remove_container(request: web.Request) -> web.Response:
    await asyncio.to_thread(
        _service(request).remove,
        request.match_info["id"],
        _truthy(request.query.get("force")),
        _truthy(request.query.get("v")),
    )
    return web.Response(status=204)


async def rename_container(request: web.Request) -> web.Response:
    name = request.query.get("name") or ""
    if not name:
        raise InvalidArgument("name is required")
    await asyncio.to_thread(_service(request).rename, request.match_info["id"], name)
    return web.Response(status=204)


async def resize_container(request: web.Request) -> web.Response:
    try:
        height, width = int(request.query.get("h") or 0), int(request.query.get("w") or 0)
    except ValueError:
        raise InvalidArgument("height and width must be integers") from None
    await asyncio.to_thread(_service(request).resize, request.match_info["id"], height, width)
    return web.Response(status=200)


async def wait_container(request: web.Request) -> web.StreamResponse:
    service = _service(request)
    future = service.wait(request.match_info["id"], request.query.get("condition", "not-running"))
    # Headers go out now: `docker run` waits for them before it starts the container.
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    try:
        result = await asyncio.wrap_future(future)
        await response.write_eof(json.dumps(result).encode() + b"\n")  # one send: clients exit on it
    except asyncio.CancelledError:
        future.cancel()
        raise
    except ConnectionError:
        future.cancel()
    return response


async def prune_containers(request: web.Request) -> web.Response:
    service = _service(request)
    filters = parse_filters(request.query.get("filters"))
    check_keys(filters, {"until", "label", "label!"})
    from kapal.daemon.routes.images import _until

    limits = [_until(value) for value in filters.get("until", [])]

    def keep(container: Container) -> bool:
        if "label" in filters and not labels_match(container.labels, filters["label"]):
            return True
        if "label!" in filters and labels_match(container.labels, filters["label!"]):
            return True
        return any(parse_rfc3339(container.created) >= limit for limit in limits)

    removed, reclaimed = await asyncio.to_thread(service.prune, keep)
    if removed:
        request.app[ENGINE].events.publish("container", "prune", "", reclaimed=str(reclaimed))
    return json_response({"ContainersDeleted": removed or None, "SpaceReclaimed": reclaimed})


# -- logs and attach ---------------------------------------------------------------------------


def _log_time(value: str | None) -> int:
    if not value:
        return 0
    try:
        return int(float(value) * 1e9)
    except ValueError:
        raise InvalidArgument(f"invalid time value {value!r}") from None


async def container_logs_route(request: web.Request) -> web.StreamResponse:
    service = _service(request)
    container = service.get(request.match_info["id"])
    query = request.query
    streams = {name for name in ("stdout", "stderr") if _truthy(query.get(name))}
    if not streams:
        raise InvalidArgument("Bad parameters: you must choose at least one stream")
    tail_text = query.get("tail", "all")
    tail = None if tail_text in ("all", "") else int(tail_text)
    since, until = _log_time(query.get("since")), _log_time(query.get("until"))
    follow = _truthy(query.get("follow"))
    timestamps = _truthy(query.get("timestamps"))
    multiplexed = not container.tty
    response = web.StreamResponse(
        headers={
            "Content-Type": "application/vnd.docker.multiplexed-stream"
            if multiplexed
            else "application/vnd.docker.raw-stream"
        }
    )
    await response.prepare(request)
    path = service.path(container) / "ctr.log"
    transport = request.transport

    def done() -> bool:
        current = service._containers.get(container.id)
        gone = transport is None or transport.is_closing()
        return gone or current is None or current.state.status not in (RUNNING, PAUSED, RESTARTING)

    if follow:

        def produce() -> Any:
            return container_logs.follow(path, streams, since, until, tail, done)
    else:

        def produce() -> Any:
            return container_logs.select_entries(
                container_logs.read_entries(path), streams, since, until, tail
            )

    try:
        async for entry in iterate_in_thread(produce):
            if entry is not None:
                await response.write(frame_log_entry(entry, multiplexed, timestamps))
        await response.write_eof()
    except ConnectionError:
        pass  # the client left (`docker logs -f` interrupted, `| head`)
    return response


async def attach_container(request: web.Request) -> web.StreamResponse:
    service = _service(request)
    container = service.get(request.match_info["id"])
    query = request.query
    want = {STDOUT: _truthy(query.get("stdout")), STDERR: _truthy(query.get("stderr"))}
    use_stdin = _truthy(query.get("stdin"))
    detach = detach_sequence(query.get("detachKeys")) if container.tty and use_stdin else b""
    response, conn = await hijack(request, multiplexed=not container.tty)
    try:
        if _truthy(query.get("logs")):
            await replay_logs(service.path(container) / "ctr.log", want, conn.write)
        if _truthy(query.get("stream")) or not _truthy(query.get("logs")):
            if container.state.status in (EXITED,) and not _truthy(query.get("stream")):
                return response
            try:
                sock = await asyncio.wrap_future(service.attach(container))
            except KapalError:
                return response  # the container did not start: `start` reports why
            await pump(sock, conn, want, use_stdin, detach)
            await conn.close_write()
    finally:
        await conn.close()
    return response


async def attach_container_ws(request: web.Request) -> web.StreamResponse:
    """``/attach/ws``: the container's stdio over a websocket, as dockerd serves it.

    Never multiplexed (one message per piece of output, whatever the stream); binary messages
    from API 1.28 on, text before; the stdin/stdout/stderr parameters count from 1.42 on (all
    three before). What the client sends goes to the container's stdin.
    """
    service = _service(request)
    container = service.get(request.match_info["id"])
    query = request.query
    version = api_version(request)
    if version >= (1, 42):
        want = {STDOUT: _truthy(query.get("stdout")), STDERR: _truthy(query.get("stderr"))}
        use_stdin = _truthy(query.get("stdin"))
    else:
        want, use_stdin = {STDOUT: True, STDERR: True}, True
    detach = detach_sequence(query.get("detachKeys")) if container.tty and use_stdin else b""
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    binary = version >= (1, 28)

    async def send(data: bytes, stream: int = STDOUT) -> None:
        if binary:
            await ws.send_bytes(data)
        else:
            await ws.send_str(data.decode(errors="replace"))

    try:
        if _truthy(query.get("logs")):
            await replay_logs(service.path(container) / "ctr.log", want, send)
        if _truthy(query.get("stream")) and container.state.status != EXITED:
            try:
                sock = await asyncio.wrap_future(service.attach(container))
            except KapalError:
                return ws
            await _pump_ws(sock, ws, send, want, use_stdin, detach)
    except ConnectionError:
        pass  # the client went away
    finally:
        await ws.close()
    return ws


async def _pump_ws(
    sock: socket.socket,
    ws: web.WebSocketResponse,
    send: Callable[[bytes, int], Awaitable[Any]],
    want: dict[int, bool],
    use_stdin: bool,
    detach: bytes,
) -> None:
    """conmon's attach socket to the websocket and the websocket's messages to stdin."""
    from aiohttp import WSMsgType

    loop = asyncio.get_running_loop()
    sock.setblocking(False)
    scanner = detach_keys.EscapeScanner(detach)

    async def from_client() -> None:
        async for message in ws:
            if message.type == WSMsgType.BINARY:
                data = message.data
            elif message.type == WSMsgType.TEXT:
                data = message.data.encode()
            else:
                break
            if not use_stdin:
                continue
            data, detached = scanner.feed(data)
            try:
                if data:
                    await loop.sock_sendall(sock, data)
                if detached:
                    sock.shutdown(socket.SHUT_RDWR)
                    return
            except OSError:
                return
        if use_stdin:  # the client closed the websocket: stdin closes with it, as a hijack's
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    output = asyncio.ensure_future(copy_output(sock, want, lambda: ws.closed, send))
    reader = asyncio.ensure_future(from_client())
    try:
        await asyncio.wait({output, reader}, return_when=asyncio.FIRST_COMPLETED)
        if reader.done():
            output.cancel()  # the client left or detached: nobody to send to
        await asyncio.gather(output, return_exceptions=True)
    finally:
        reader.cancel()
        sock.close()


async def replay_logs(
    path: Path, want: dict[int, bool], send: Callable[[bytes, int], Awaitable[Any]]
) -> None:
    """An attach's ``logs=1``: what the container has logged so far, on the streams asked for."""
    streams = {name for stream, name in ((STDOUT, "stdout"), (STDERR, "stderr")) if want[stream]}
    for entry in await asyncio.to_thread(lambda: list(container_logs.read_entries(path))):
        if entry.stream in streams:
            await send(entry.data, STDOUT if entry.stream == "stdout" else STDERR)


async def copy_output(
    sock: socket.socket,
    want: dict[int, bool],
    closed: Callable[[], bool],
    send: Callable[[bytes, int], Awaitable[Any]],
) -> None:
    """conmon's attach packets (a pipe-number byte, then data) to the client, until they end."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            packet = await loop.sock_recv(sock, 65537)
        except OSError:
            break
        if not packet:
            break
        stream = PIPE_TO_STREAM.get(packet[0])
        if stream is not None and want.get(stream) and not closed():
            await send(packet[1:], stream)


def detach_sequence(keys: str | None) -> bytes:
    """The detach keys a TTY attach watches for (Docker's default: ctrl-p,ctrl-q)."""
    try:
        return detach_keys.parse(detach_keys.DEFAULT if keys is None else keys)
    except detach_keys.DetachKeysError as error:
        raise InvalidArgument(str(error)) from None


async def pump(
    sock: socket.socket,
    conn: HijackedConnection,
    want: dict[int, bool],
    use_stdin: bool,
    detach: bytes = b"",
) -> bool:
    """Copy conmon's attach socket to the client and the client's stdin to it, until the container
    ends or the client types the *detach* sequence (the container goes on; only the attach ends).
    Whether the client detached."""
    loop = asyncio.get_running_loop()
    sock.setblocking(False)
    scanner = detach_keys.EscapeScanner(detach)
    detached = False

    async def from_client() -> None:
        nonlocal detached
        while True:
            data = await conn.reader.read(65536)
            if not data:
                break
            data, detached = scanner.feed(data)
            try:
                if data:
                    await loop.sock_sendall(sock, data)
                if detached:
                    sock.shutdown(socket.SHUT_RDWR)  # ends to_client, and so the attach
                    return
            except OSError:
                return
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    output = asyncio.ensure_future(copy_output(sock, want, lambda: conn.closed, conn.write))
    feeder = asyncio.ensure_future(from_client()) if use_stdin else None
    try:
        await output
    finally:
        if feeder is not None:
            feeder.cancel()
        sock.close()
    return detached


def register(routes: Routes) -> None:
    routes.get("/containers/json", list_containers)
    routes.post("/containers/create", create_container)
    routes.post("/containers/prune", prune_containers)
    routes.get("/containers/{id}/json", inspect_container)
    routes.post("/containers/{id}/start", start_container)
    routes.post("/containers/{id}/stop", stop_container)
    routes.post("/containers/{id}/restart", restart_container)
    routes.post("/containers/{id}/kill", kill_container)
    routes.post("/containers/{id}/pause", pause_container)
    routes.post("/containers/{id}/unpause", unpause_container)
    routes.post("/containers/{id}/rename", rename_container)
    routes.post("/containers/{id}/resize", resize_container)
    routes.post("/containers/{id}/wait", wait_container)
    routes.post("/containers/{id}/attach", attach_container)
    routes.get("/containers/{id}/attach/ws", attach_container_ws)
    routes.get("/containers/{id}/logs", container_logs_route)
    routes.delete("/containers/{id}", remove_container)
