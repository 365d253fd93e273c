"""Network routes (``/networks``) and the NetworkSettings / Ports shapes of container inspect and list.

JSON shapes are Docker's (``Network``, ``EndpointSettings``, ``Port``). The
container routes call ``network_settings_json`` and ``ports_summary`` so inspect,
``docker port`` and ``docker ps`` all read one source: the settings the network
service recorded on the container.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from kapal.container.model import Container
from kapal.daemon.app import ENGINE, Routes, json_response, read_json_body
from kapal.daemon.filters import check_keys, labels_match, parse_filters
from kapal.errors import InvalidArgument
from kapal.network.ipam import Network
from kapal.network.service import NetworkService, empty_settings, endpoint_settings

NETWORK_FILTERS = {"name", "id", "driver", "type", "label", "scope", "dangling"}


# -- container views ---------------------------------------------------------------------------


def network_settings_json(container: Container, short_id_alias: bool = False) -> dict[str, Any]:
    """Inspect's ``NetworkSettings``: the recorded settings, or the never-started shape."""
    recorded = container.network_settings or {}
    out = empty_settings()
    out.update(recorded)
    if short_id_alias:
        out["Networks"] = {
            name: {**settings, "Aliases": [*(settings.get("Aliases") or []), container.short_id]}
            if settings.get("DNSNames")
            else settings
            for name, settings in out["Networks"].items()
        }
    if not out["Networks"]:
        mode = str(container.host_config.get("NetworkMode") or "")
        mode = "bridge" if mode in ("", "default") else mode
        out["Networks"] = {
            ("default" if mode.startswith("container:") else mode): endpoint_settings(None, None)
        }
    if not container.running:
        out["Ports"] = {}
    return out


def ports_summary(container: Container) -> list[dict[str, Any]]:
    """``ContainerSummary.Ports``: one entry per binding, and one per exposed-but-unpublished port."""
    out: list[dict[str, Any]] = []
    for key, bindings in (network_settings_json(container)["Ports"] or {}).items():
        port, _, proto = key.partition("/")
        if not bindings:
            out.append({"PrivatePort": int(port), "Type": proto or "tcp"})
            continue
        for binding in bindings:
            out.append(
                {
                    "IP": binding.get("HostIp") or "0.0.0.0",
                    "PrivatePort": int(port),
                    "PublicPort": int(binding["HostPort"]),
                    "Type": proto or "tcp",
                }
            )
    return out


# -- networks ----------------------------------------------------------------------------------


def _service(request: web.Request) -> NetworkService:
    return request.app[ENGINE].networks


def network_json(service: NetworkService, network: Network, verbose: bool = True) -> dict[str, Any]:
    record = network.record
    options = dict(record.get("Options") or {})
    if network.driver == "bridge":
        options.setdefault("com.docker.network.bridge.name", network.bridge)
        options.setdefault("com.docker.network.driver.mtu", str(service.options.mtu))
    out: dict[str, Any] = {
        "Name": network.name,
        "Id": network.id,
        "Created": network.created,
        "Scope": "local",
        "Driver": network.driver,
        "EnableIPv4": True,
        "EnableIPv6": False,
        "IPAM": {
            "Driver": "default",
            "Options": None,
            "Config": [{"Subnet": network.subnet, "Gateway": network.gateway}] if network.subnet else [],
        },
        "Internal": bool(record.get("Internal")),
        "Attachable": bool(record.get("Attachable")),
        "Ingress": False,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": False,
        "Containers": {},
        "Options": options,
        "Labels": record.get("Labels") or {},
    }
    if verbose:
        containers = service.containers
        for endpoint in service.endpoints(network):
            try:
                name = containers.get(endpoint.container_id).name if containers is not None else ""
            except Exception:  # noqa: BLE001 - a container removed mid-request still lists, nameless
                name = ""
            out["Containers"][endpoint.container_id] = {
                "Name": name,
                "EndpointID": endpoint.id,
                "MacAddress": endpoint.mac,
                "IPv4Address": f"{endpoint.address}/{network.prefixlen}",
                "IPv6Address": "",
            }
    return out


def _matches(service: NetworkService, network: Network, filters: dict[str, list[str]]) -> bool:
    if filters.get("name") and not any(value in network.name for value in filters["name"]):
        return False
    if filters.get("id") and not any(network.id.startswith(value) for value in filters["id"]):
        return False
    if filters.get("driver") and network.driver not in filters["driver"]:
        return False
    if filters.get("type"):
        kind = "builtin" if network.builtin else "custom"
        if kind not in filters["type"]:
            return False
    if filters.get("scope") and "local" not in filters["scope"]:
        return False
    if filters.get("label") and not labels_match(network.record.get("Labels"), filters["label"]):
        return False
    if filters.get("dangling"):
        dangling = not network.builtin and not service.endpoints(network)
        if (filters["dangling"][-1].lower() in ("true", "1")) != dangling:
            return False
    return True


async def list_networks(request: web.Request) -> web.Response:
    service = _service(request)
    filters = parse_filters(request.query.get("filters"))
    check_keys(filters, NETWORK_FILTERS)

    def collect() -> list[dict[str, Any]]:
        return [network_json(service, n, False) for n in service.list() if _matches(service, n, filters)]

    return json_response(await asyncio.to_thread(collect))


async def inspect_network(request: web.Request) -> web.Response:
    service = _service(request)
    network = service.get(request.match_info["id"])
    return json_response(await asyncio.to_thread(network_json, service, network))


async def create_network(request: web.Request) -> web.Response:
    service = _service(request)
    body = await read_json_body(request)
    configs = ((body.get("IPAM") or {}).get("Config")) or []
    ipv4 = [c for c in configs if ":" not in (c.get("Subnet") or "")]
    if len(ipv4) > 1:
        raise InvalidArgument("only one IPv4 subnet per network is supported")
    config = ipv4[0] if ipv4 else {}
    network = await asyncio.to_thread(
        service.create,
        str(body.get("Name") or ""),
        str(body.get("Driver") or "bridge"),
        str(config.get("Subnet") or ""),
        str(config.get("Gateway") or ""),
        bool(body.get("Internal")),
        body.get("Labels") or {},
        body.get("Options") or {},
        bool(body.get("Attachable")),
    )
    return json_response({"Id": network.id, "Warning": ""}, status=201)


async def remove_network(request: web.Request) -> web.Response:
    await asyncio.to_thread(_service(request).remove, request.match_info["id"])
    return web.Response(status=204)


async def connect_network(request: web.Request) -> web.Response:
    body = await read_json_body(request)
    await asyncio.to_thread(
        _service(request).connect,
        request.match_info["id"],
        str(body.get("Container") or ""),
        body.get("EndpointConfig") or {},
    )
    return web.Response(status=200)


async def disconnect_network(request: web.Request) -> web.Response:
    body = await read_json_body(request)
    await asyncio.to_thread(
        _service(request).disconnect,
        request.match_info["id"],
        str(body.get("Container") or ""),
        bool(body.get("Force")),
    )
    return web.Response(status=200)


async def prune_networks(request: web.Request) -> web.Response:
    filters = parse_filters(request.query.get("filters"))
    check_keys(filters, {"label", "until"})
    service = _service(request)
    if filters.get("label"):
        wanted = filters["label"]

        def prune() -> list[str]:
            removed = []
            for network in service.list():
                if network.builtin or service.endpoints(network):
                    continue
                if labels_match(network.record.get("Labels"), wanted):
                    service.remove(network.id)
                    removed.append(network.name)
            return removed

        names = await asyncio.to_thread(prune)
    else:
        names = await asyncio.to_thread(service.prune)
    return json_response({"NetworksDeleted": names or None})


def register(routes: Routes) -> None:
    routes.get("/networks", list_networks)
    routes.get("/networks/", list_networks)
    routes.post("/networks/create", create_network)
    routes.post("/networks/prune", prune_networks)
    routes.get("/networks/{id}", inspect_network)
    routes.delete("/networks/{id}", remove_network)
    routes.post("/networks/{id}/connect", connect_network)
    routes.post("/networks/{id}/disconnect", disconnect_network)
