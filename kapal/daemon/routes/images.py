"""Image routes: thin adapters from the Engine API to the image store.

The JSON shapes are Docker's (``ImageSummary``, ``ImageInspect``,
``HistoryResponseItem``); per-version differences are decided in this module
and nowhere else.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import re
import time
from collections import Counter
from typing import Any

from aiohttp import web

from kapal import reference
from kapal.daemon.app import ENGINE, Routes, api_version, json_response
from kapal.daemon.filters import bool_filter, check_keys, glob_match, labels_match, parse_filters
from kapal.daemon.routes import distribution
from kapal.daemon.streams import ResponseWriter, body_reader, json_progress
from kapal.errors import InvalidArgument, NotImplementedYet
from kapal.image import archive
from kapal.image.importer import import_rootfs
from kapal.image.store import Image, familiar

ZERO_TIME = "0001-01-01T00:00:00Z"

CONTAINER_CONFIG_DEFAULTS: dict[str, Any] = {
    "Hostname": "",
    "Domainname": "",
    "User": "",
    "AttachStdin": False,
    "AttachStdout": False,
    "AttachStderr": False,
    "Tty": False,
    "OpenStdin": False,
    "StdinOnce": False,
    "Env": None,
    "Cmd": None,
    "Image": "",
    "Volumes": None,
    "WorkingDir": "",
    "Entrypoint": None,
    "OnBuild": None,
    "Labels": None,
}


def unix_time(rfc3339: str) -> int:
    if not rfc3339:
        return 0
    text = rfc3339.replace("Z", "+00:00")
    if "." in text:
        # Python parses at most microseconds; Go writes nanoseconds.
        head, _, rest = text.partition(".")
        digits = "".join(ch for ch in rest if ch.isdigit())
        zone = rest[len(digits) :]
        text = f"{head}.{digits[:6]}{zone}"
    try:
        return int(datetime.datetime.fromisoformat(text).timestamp())
    except ValueError:
        return 0


def rfc3339(timestamp: float | None) -> str:
    if not timestamp:
        return ZERO_TIME
    moment = datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}000Z"


def image_summaries(images: list[Image], request: web.Request, with_shared_size: bool = False) -> list[dict]:
    version = api_version(request)
    layer_users: Counter[str] = Counter()
    layer_sizes: dict[str, int] = {}
    if with_shared_size:
        engine = request.app[ENGINE]
        for image in images:
            layer_users.update({diff_id for diff_id, _ in image.layers})
        layer_sizes = {layer.diff_id: layer.size for layer in engine.layers.all()}
    out = []
    for image in images:
        shared = -1
        if with_shared_size:
            shared = sum(layer_sizes.get(d, 0) for d, _ in image.layers if layer_users[d] > 1)
        summary: dict[str, Any] = {
            "Id": image.id,
            "ParentId": "",
            "RepoTags": [familiar(tag) for tag in image.tags],
            "RepoDigests": [familiar(name) for name in image.repo_digests],
            "Created": unix_time(image.created),
            "Size": image.size,
            "SharedSize": shared,
            "Labels": image.labels,
            "Containers": -1,
        }
        if version < (1, 44):
            summary["VirtualSize"] = image.size
        if version < (1, 25):
            summary["RepoTags"] = summary["RepoTags"] or ["<none>:<none>"]
            summary["RepoDigests"] = summary["RepoDigests"] or ["<none>@<none>"]
        out.append(summary)
    return out


IMAGE_FILTERS = {"dangling", "label", "before", "since", "reference", "until"}


def _name_matches(name: str, patterns: list[str]) -> bool:
    """Docker's FamiliarMatch: the pattern against ``repo:tag`` and against ``repo``."""
    short = familiar(name)
    repo = short.split("@", 1)[0] if "@" in short else short.rsplit(":", 1)[0]
    return any(glob_match(p, short) or glob_match(p, repo) for p in patterns)


def _only_matching_names(image: Image, patterns: list[str]) -> Image | None:
    """With a reference filter Docker lists only the names that match (and drops the image if none do)."""
    tags = [name for name in image.tags if _name_matches(name, patterns)]
    repo_digests = [name for name in image.repo_digests if _name_matches(name, patterns)]
    if not tags and not repo_digests:
        return None
    return dataclasses.replace(image, tags=tags, repo_digests=repo_digests)


def filter_images(images: list[Image], filters: dict[str, list[str]], request: web.Request) -> list[Image]:
    check_keys(filters, IMAGE_FILTERS)
    engine = request.app[ENGINE]
    dangling = bool_filter(filters, "dangling")
    if dangling is not None:
        images = [image for image in images if (not image.tags) == dangling]
    if "label" in filters:
        images = [image for image in images if labels_match(image.labels, filters["label"])]
    if "reference" in filters:
        matching = (_only_matching_names(image, filters["reference"]) for image in images)
        images = [image for image in matching if image is not None]
    for key, keep_older in (("before", True), ("since", False)):
        for name in filters.get(key, []):
            pivot = unix_time(engine.images.get(name).created)
            images = [
                image
                for image in images
                if (unix_time(image.created) < pivot if keep_older else unix_time(image.created) > pivot)
            ]
    for value in filters.get("until", []):
        limit = _until(value)
        images = [image for image in images if unix_time(image.created) < limit]
    return images


def _until(value: str) -> float:
    """``until``: a Unix timestamp, an RFC 3339 date, or a Go duration like ``24h``."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ns|us|ms|s|m|h)", value)
    if match:
        scale = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}[match.group(2)]
        return time.time() - float(match.group(1)) * scale
    try:
        return float(value)
    except ValueError:
        stamp = unix_time(value)
        if stamp:
            return stamp
    raise InvalidArgument(f"invalid until filter {value!r}")


async def list_images(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    filters = parse_filters(request.query.get("filters"))
    images = await asyncio.to_thread(engine.images.list)
    images = filter_images(images, filters, request)
    images.sort(key=lambda image: (unix_time(image.created), image.added), reverse=True)
    return json_response(image_summaries(images, request, with_shared_size=False))


def inspect_json(image: Image, request: web.Request) -> dict[str, Any]:
    engine = request.app[ENGINE]
    config = image.config
    container_config = dict(CONTAINER_CONFIG_DEFAULTS)
    container_config.update(config.get("config") or {})
    diff_ids = [diff_id for diff_id, _ in image.layers]
    dirs = [str(engine.layers.path(diff_id)) for diff_id in reversed(diff_ids)]
    history = config.get("history") or []
    comment = config.get("comment") or (history[-1].get("comment", "") if history else "")
    out: dict[str, Any] = {
        "Id": image.id,
        "RepoTags": [familiar(tag) for tag in image.tags],
        "RepoDigests": [familiar(name) for name in image.repo_digests],
        "Parent": "",
        "Comment": comment,
        "Created": image.created or ZERO_TIME,
        "DockerVersion": config.get("docker_version", ""),
        "Author": config.get("author", ""),
        "Config": container_config,
        "Architecture": config.get("architecture", ""),
        "Os": config.get("os", ""),
        "Size": image.size,
        "GraphDriver": {
            "Name": "overlay2",
            "Data": {"LowerDir": ":".join(dirs[1:]), "UpperDir": dirs[0] if dirs else ""} if dirs else None,
        },
        "RootFS": {"Type": "layers", "Layers": diff_ids},
        "Metadata": {"LastTagTime": rfc3339(image.last_tag_time)},
    }
    if config.get("variant"):
        out["Variant"] = config["variant"]
    if config.get("os.version"):
        out["OsVersion"] = config["os.version"]
    version = api_version(request)
    if version < (1, 44):
        out["VirtualSize"] = image.size
    if version < (1, 45):
        out["Container"] = ""
        out["ContainerConfig"] = dict(CONTAINER_CONFIG_DEFAULTS)
    return out


async def inspect_image(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    image = await asyncio.to_thread(engine.images.get, request.match_info["name"])
    return json_response(inspect_json(image, request))


async def image_history(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    image = await asyncio.to_thread(engine.images.get, request.match_info["name"])
    history = list(image.config.get("history") or [])
    sizes = [engine.layers.require(diff_id).size for diff_id, _ in image.layers]
    if not history:
        history = [{"created": image.created} for _ in sizes]
    items = []
    layer_index = 0
    for entry in history:
        size = 0
        if not entry.get("empty_layer") and layer_index < len(sizes):
            size = sizes[layer_index]
            layer_index += 1
        items.append(
            {
                "Id": "<missing>",
                "Created": unix_time(entry.get("created", "")),
                "CreatedBy": entry.get("created_by", ""),
                "Tags": None,
                "Size": size,
                "Comment": entry.get("comment", ""),
            }
        )
    items.reverse()
    if items:
        items[0]["Id"] = image.id
        items[0]["Tags"] = [familiar(tag) for tag in image.tags] or None
    return json_response(items)


async def tag_image(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    repo = request.query.get("repo", "")
    tag = request.query.get("tag", "")
    if repo and not tag:
        # Old clients send "repo:tag" in repo.
        ref = reference.parse(repo, default_tag=False)
        if ref.digest:
            raise InvalidArgument("refusing to create a tag with a digest reference")
        if ref.tag:
            repo, tag = ref.repository, ref.tag
    await asyncio.to_thread(engine.images.tag, request.match_info["name"], repo, tag)
    return web.Response(status=201)


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes")


async def delete_image(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    report = await asyncio.to_thread(
        engine.images.delete, request.match_info["name"], _truthy(request.query.get("force"))
    )
    return json_response(report)


async def prune_images(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    filters = parse_filters(request.query.get("filters"))
    check_keys(filters, {"dangling", "label", "label!", "until"})
    dangling = bool_filter(filters, "dangling")
    limits = [_until(value) for value in filters.get("until", [])]

    def keep(image: Image) -> bool:
        if "label" in filters and not labels_match(image.labels, filters["label"]):
            return True
        if "label!" in filters and labels_match(image.labels, filters["label!"]):
            return True
        return any(unix_time(image.created) >= limit for limit in limits)

    report, reclaimed = await asyncio.to_thread(engine.images.prune, dangling is False, keep)
    return json_response({"ImagesDeleted": report or None, "SpaceReclaimed": reclaimed})


async def load_images(request: web.Request) -> web.StreamResponse:
    engine = request.app[ENGINE]
    quiet = _truthy(request.query.get("quiet"))
    reader = body_reader(request)

    def work(emit: Any) -> None:
        def progress(message: dict[str, Any]) -> None:
            if not quiet or "stream" in message:
                emit(message)

        archive.load(reader, engine.images, progress)

    response, _ = await json_progress(request, work)
    return response


async def save_images(request: web.Request) -> web.StreamResponse:
    engine = request.app[ENGINE]
    names = (
        [request.match_info["name"]] if "name" in request.match_info else request.query.getall("names", [])
    )
    if not names:
        raise InvalidArgument("no images given to save")
    for name in names:  # a missing image is a 404 before any byte is sent
        await asyncio.to_thread(engine.images.resolve, name)
    response = web.StreamResponse(headers={"Content-Type": "application/x-tar"})
    await response.prepare(request)
    writer = ResponseWriter(response, asyncio.get_running_loop())
    await asyncio.to_thread(archive.save, engine.images, names, writer)
    await response.write_eof()
    return response


async def create_image(request: web.Request) -> web.StreamResponse:
    engine = request.app[ENGINE]
    source = request.query.get("fromSrc")
    if request.query.get("fromImage"):
        return await distribution.pull_image(request)
    if not source:
        raise InvalidArgument("either fromSrc or fromImage must be given")
    if source != "-":
        raise NotImplementedYet("importing from a URL is not supported; pipe the tarball to `kapal import -`")
    repo = request.query.get("repo", "")
    tag = request.query.get("tag", "")
    target = None
    if repo:
        target = f"{repo}:{tag}" if tag else repo
        reference.parse(target)
    changes = request.query.getall("changes", [])
    message = request.query.get("message", "")
    platform = request.query.get("platform") or None
    reader = body_reader(request)

    def work(emit: Any) -> None:
        image = import_rootfs(reader, engine.images, target, changes, message, "-", platform)
        emit({"status": image.id})

    response, _ = await json_progress(request, work)
    return response


def register(routes: Routes) -> None:
    routes.get("/images/json", list_images)
    routes.post("/images/load", load_images)
    routes.get("/images/get", save_images)
    routes.post("/images/create", create_image)
    routes.post("/images/prune", prune_images)
    routes.get("/images/{name:.+}/json", inspect_image)
    routes.get("/images/{name:.+}/history", image_history)
    routes.get("/images/{name:.+}/get", save_images)
    routes.post("/images/{name:.+}/tag", tag_image)
    distribution.register(routes)
    routes.delete("/images/{name:.+}", delete_image)
