"""System routes: ping, version, info, events, disk usage."""

from __future__ import annotations

import asyncio
import datetime
import os
import platform
import time
from typing import Any

from aiohttp import web

from kapal import __version__
from kapal.daemon.app import API_VERSION, ENGINE, MIN_API_VERSION, Routes, json_response
from kapal.daemon.filters import check_keys, labels_match, parse_filters
from kapal.daemon.routes.containers import summary as summary_of
from kapal.daemon.routes.images import image_summaries
from kapal.daemon.routes.volumes import volumes_df_json
from kapal.daemon.streams import json_line
from kapal.errors import InvalidArgument
from kapal.events import Event
from kapal.image.manifest import host_platform

PING_HEADERS = {
    "Builder-Version": "1",
    "Docker-Experimental": "false",
    "Swarm": "inactive",
    "Cache-Control": "no-cache, no-store, must-revalidate",
    "Pragma": "no-cache",
}


async def ping(request: web.Request) -> web.Response:
    body = "" if request.method == "HEAD" else "OK"
    return web.Response(text=body, content_type="text/plain", headers=PING_HEADERS)


def _kernel() -> str:
    return os.uname().release


def _os_name() -> str:
    try:
        with open("/etc/os-release") as release:
            for line in release:
                if line.startswith("PRETTY_NAME="):
                    return line.partition("=")[2].strip().strip('"')
    except OSError:
        pass
    return "Linux"


async def version(request: web.Request) -> web.Response:
    arch = host_platform()["architecture"]
    details = {
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "Arch": arch,
        "Os": "linux",
        "KernelVersion": _kernel(),
        "GitCommit": "",
        "GoVersion": f"python{platform.python_version()}",
        "BuildTime": "",
    }
    return json_response(
        {
            "Platform": {"Name": f"kapal Engine {__version__}"},
            "Components": [
                # Component details are strings, the top-level Experimental a bool (as dockerd sends them).
                {"Name": "Engine", "Version": __version__, "Details": {**details, "Experimental": "false"}},
            ],
            "Version": __version__,
            **details,
        }
    )


def _mem_total() -> int:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _cgroup_version() -> str:
    return "2" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else "1"


async def info(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    images = await asyncio.to_thread(engine.images.list)
    containers = engine.containers.list()
    return json_response(
        {
            "ID": engine.id,
            "Containers": len(containers),
            "ContainersRunning": sum(1 for c in containers if c.state.status == "running"),
            "ContainersPaused": sum(1 for c in containers if c.state.status == "paused"),
            "ContainersStopped": sum(1 for c in containers if c.state.status not in ("running", "paused")),
            "Images": len(images),
            "Driver": "overlay2",
            "DriverStatus": [["Backing Filesystem", "extfs"], ["Supports d_type", "true"]],
            "Plugins": {
                "Volume": ["local"],
                "Network": ["bridge", "host", "none"],
                "Authorization": None,
                "Log": ["json-file", "none"],
            },
            "MemoryLimit": True,
            "SwapLimit": True,
            "CpuCfsPeriod": True,
            "CpuCfsQuota": True,
            "CPUShares": True,
            "CPUSet": True,
            "PidsLimit": True,
            "IPv4Forwarding": True,
            "Debug": False,
            "NFd": len(os.listdir("/proc/self/fd")),
            "NGoroutines": 0,
            "SystemTime": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "LoggingDriver": "json-file",
            "CgroupDriver": "cgroupfs",
            "CgroupVersion": _cgroup_version(),
            "NEventsListener": 0,
            "KernelVersion": _kernel(),
            "OperatingSystem": _os_name(),
            "OSVersion": "",
            "OSType": "linux",
            "Architecture": platform.machine(),
            "IndexServerAddress": "https://index.docker.io/v1/",
            "RegistryConfig": {
                "IndexConfigs": {},
                "InsecureRegistryCIDRs": ["127.0.0.0/8"],
                "Mirrors": [],
            },
            "NCPU": os.cpu_count() or 1,
            "MemTotal": _mem_total(),
            "DockerRootDir": str(engine.root),
            "Name": platform.node(),
            "Labels": [],
            "ExperimentalBuild": False,
            "ServerVersion": __version__,
            "Runtimes": {"crun": {"path": "crun"}, "runc": {"path": "runc"}},
            "DefaultRuntime": "crun",
            "Swarm": {
                "NodeID": "",
                "NodeAddr": "",
                "LocalNodeState": "inactive",
                "ControlAvailable": False,
                "Error": "",
                "RemoteManagers": None,
            },
            "LiveRestoreEnabled": True,
            "Isolation": "",
            "InitBinary": "tini",
            "ContainerdCommit": {"ID": ""},
            "RuncCommit": {"ID": ""},
            "InitCommit": {"ID": ""},
            "SecurityOptions": ["name=seccomp,profile=builtin"],
            "Warnings": None,
        }
    )


EVENT_FILTERS = {"type", "event", "image", "container", "label", "scope", "network", "volume", "daemon"}


def _event_matches(event: Event, filters: dict[str, list[str]]) -> bool:
    if "type" in filters and event.type not in filters["type"]:
        return False
    if "event" in filters and event.action not in filters["event"]:
        return False
    if "scope" in filters and "local" not in filters["scope"]:
        return False
    if "image" in filters:
        names = {event.actor_id, event.attributes.get("name", ""), event.attributes.get("image", "")}
        short = {name.partition(":")[0] for name in names if name}
        if not (set(filters["image"]) & (names | short)):
            return False
    if (
        "container" in filters
        and event.type == "container"
        and not (set(filters["container"]) & {event.actor_id, event.attributes.get("name", "")})
    ):
        return False
    if "volume" in filters and not any(
        event.actor_id.startswith(v) or event.attributes.get("name", "").startswith(v)
        for v in filters["volume"]
    ):
        return False  # as dockerd's fuzzy match: the filter keeps only events whose actor it names
    return "label" not in filters or labels_match(event.attributes, filters["label"])


def _parse_time(value: str | None, name: str) -> float | None:
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        raise InvalidArgument(f"invalid {name} value {value!r}: want a Unix timestamp") from None


async def events(request: web.Request) -> web.StreamResponse:
    engine = request.app[ENGINE]
    filters = parse_filters(request.query.get("filters"))
    check_keys(filters, EVENT_FILTERS)
    since = _parse_time(request.query.get("since"), "since")
    until = _parse_time(request.query.get("until"), "until")
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Event] = asyncio.Queue()

    def deliver(event: Event) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, event)

    backlog = engine.events.subscribe(deliver, int(since * 1e9) if since is not None else None)
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    try:
        await response.prepare(request)
        for event in backlog:
            if (until is None or event.time_nano <= until * 1e9) and _event_matches(event, filters):
                await response.write(json_line(event.to_json()))
        while True:
            timeout = None if until is None else until - time.time()
            if timeout is not None and timeout <= 0:
                break
            try:
                event = await asyncio.wait_for(queue.get(), timeout)
            except TimeoutError:
                break
            if since is not None and backlog and event.time_nano <= backlog[-1].time_nano:
                continue
            if _event_matches(event, filters):
                await response.write(json_line(event.to_json()))
    finally:
        engine.events.unsubscribe(deliver)
    await response.write_eof()
    return response


async def system_df(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    images = await asyncio.to_thread(engine.images.list)
    summaries: list[dict[str, Any]] = image_summaries(images, request, with_shared_size=True)
    service = engine.containers
    containers = service.list()
    for summary in summaries:
        summary["Containers"] = sum(1 for c in containers if c.image_id == summary["Id"])
    container_summaries = await asyncio.to_thread(lambda: [summary_of(c, service, True) for c in containers])
    return json_response(
        {
            "LayersSize": await asyncio.to_thread(engine.layers.usage),
            "Images": summaries,
            "Containers": container_summaries,
            "Volumes": await asyncio.to_thread(volumes_df_json, engine.volumes),
            "BuildCache": await asyncio.to_thread(build_cache_json, engine),
        }
    )


def build_cache_json(engine: Any) -> list[dict[str, Any]]:
    """Docker's ``BuildCacheRecord``s: one per cached build step (its layer's size, when it added one)."""
    return [
        {
            "ID": entry["key"].removeprefix("sha256:")[:25],
            "Parents": None,
            "Type": "regular",
            "Description": "",
            "InUse": False,
            "Shared": False,
            "Size": int(entry["size"]),
            "CreatedAt": _rfc3339(entry["created"]),
            "LastUsedAt": _rfc3339(entry["last_used"]),
            "UsageCount": 1,
        }
        for entry in engine.build_cache.entries()
    ]


def _rfc3339(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def register(routes: Routes) -> None:
    routes.get("/_ping", ping)
    routes.head("/_ping", ping)
    routes.get("/version", version)
    routes.get("/info", info)
    routes.get("/events", events)
    routes.get("/system/df", system_df)
