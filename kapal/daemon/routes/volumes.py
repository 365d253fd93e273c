"""Volume routes (``/volumes``): thin adapters from the Engine API to the volume service.

JSON shapes are Docker's (``Volume``, ``VolumeListResponse``,
``VolumePruneResponse``); keys are written in the order dockerd writes them,
so ``inspect`` output matches byte for byte.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from kapal.daemon.app import ENGINE, Routes, api_version, json_response, read_json_body
from kapal.daemon.filters import check_keys, parse_filters
from kapal.errors import InvalidArgument
from kapal.volume.service import LIST_FILTERS, PRUNE_FILTERS, Volume, VolumeService


def _service(request: web.Request) -> VolumeService:
    return request.app[ENGINE].volumes


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes")


def _strings(value: Any, field: str) -> dict[str, str] | None:
    """``Labels``/``DriverOpts`` of a request: an object of strings, or null."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidArgument(f"invalid JSON body: {field} must be an object of strings")
    return {str(k): "" if v is None else str(v) for k, v in value.items()}


def volume_json(volume: Volume, usage: dict[str, int] | None = None) -> dict[str, Any]:
    """Docker's ``Volume`` object; ``UsageData`` only where dockerd computes it (``system df``)."""
    out: dict[str, Any] = {
        "CreatedAt": volume.created_at,
        "Driver": volume.driver,
        "Labels": volume.labels,
        "Mountpoint": str(volume.mountpoint),
        "Name": volume.name,
        "Options": volume.options,
        "Scope": volume.scope,
    }
    if usage is not None:
        out["UsageData"] = usage
    return out


def volumes_df_json(service: VolumeService) -> list[dict[str, Any]]:
    """``system df``'s ``Volumes``: local volumes without driver options, with size and reference count."""
    out = []
    for volume in service.list_all():
        if volume.options:
            continue  # as dockerd: a mounted device's size is not this disk's
        try:
            size = service.usage(volume.name)
        except OSError:
            size = -1
        out.append(volume_json(volume, {"Size": size, "RefCount": len(service.users(volume.name))}))
    return out


async def list_volumes(request: web.Request) -> web.Response:
    filters = parse_filters(request.query.get("filters"))
    check_keys(filters, LIST_FILTERS)
    volumes = await asyncio.to_thread(_service(request).list, filters)
    # dockerd's Warnings is a nil slice when there are none: null, not [].
    return json_response({"Volumes": [volume_json(v) for v in volumes], "Warnings": None})


async def create_volume(request: web.Request) -> web.Response:
    body = await read_json_body(request)
    if body.get("ClusterVolumeSpec"):
        raise InvalidArgument("cluster volumes need a swarm manager; kapal has no swarm")
    volume = await asyncio.to_thread(
        _service(request).create,
        str(body.get("Name") or "") or None,
        str(body.get("Driver") or "") or "local",
        _strings(body.get("Labels"), "Labels"),
        _strings(body.get("DriverOpts"), "DriverOpts"),
    )
    return json_response(volume_json(volume), status=201)


async def inspect_volume(request: web.Request) -> web.Response:
    volume = _service(request).get(request.match_info["name"])
    return json_response(volume_json(volume))


async def remove_volume(request: web.Request) -> web.Response:
    await asyncio.to_thread(
        _service(request).remove, request.match_info["name"], _truthy(request.query.get("force"))
    )
    return web.Response(status=204)


async def prune_volumes(request: web.Request) -> web.Response:
    filters = parse_filters(request.query.get("filters"))
    check_keys(filters, PRUNE_FILTERS)
    if api_version(request) < (1, 42):
        filters["all"] = ["true"]  # before API 1.42 prune removed named volumes too
    removed, reclaimed = await asyncio.to_thread(_service(request).prune, filters)
    return json_response({"VolumesDeleted": removed, "SpaceReclaimed": reclaimed})


def register(routes: Routes) -> None:
    routes.get("/volumes", list_volumes)
    routes.post("/volumes/create", create_volume)
    routes.post("/volumes/prune", prune_volumes)
    routes.get("/volumes/{name}", inspect_volume)
    routes.delete("/volumes/{name}", remove_volume)
