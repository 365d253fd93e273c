"""The OCI Distribution API over aiohttp: routing, headers, errors, access checks, logs.

Names contain slashes, so one route takes everything under ``/v2/`` and the path is
split here by the spec's endpoint shapes (``<name>/manifests/<reference>``…), longest
match first, as distribution does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from kapal.content.store import storage_error
from kapal.errors import KapalError
from kapal.registry import manifests
from kapal.registry.errors import RegistryError, from_kapal_error
from kapal.registry.metrics import Metrics
from kapal.registry.storage import RegistryStorage, check_digest, check_name
from kapal.registry.uploads import UploadSessions

log = logging.getLogger("kapal.registry")
access_log = logging.getLogger("kapal.registry.access")

API_VERSION_HEADER = {"Docker-Distribution-API-Version": "registry/2.0"}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_ROUTES = [
    ("manifest", re.compile(r"(?P<name>.+)/manifests/(?P<reference>[^/]+)")),
    ("upload", re.compile(r"(?P<name>.+)/blobs/uploads/(?P<session>[^/]+)")),
    ("uploads", re.compile(r"(?P<name>.+)/blobs/uploads/?")),
    ("blob", re.compile(r"(?P<name>.+)/blobs/(?P<digest>[^/]+)")),
    ("tags", re.compile(r"(?P<name>.+)/tags/list")),
    ("referrers", re.compile(r"(?P<name>.+)/referrers/(?P<digest>[^/]+)")),
]
# The access a request needs, by method (distribution's token scopes use these action names).
_ACTIONS = {"GET": "pull", "HEAD": "pull", "POST": "push", "PUT": "push", "PATCH": "push", "DELETE": "delete"}


class Authorizer(Protocol):
    """Decides who a request is and whether they may do *actions* on repository *name*."""

    async def authorize(
        self, request: web.Request, resource: tuple[str, str] | None, actions: list[str]
    ) -> str:
        """Return the user name ('' for anonymous), or raise UNAUTHORIZED/DENIED."""
        ...


class Upstream(Protocol):
    """A registry this one mirrors (kapal.registry.proxy)."""

    async def ensure_manifest(self, name: str, reference: str) -> None: ...

    async def ensure_blob(self, name: str, digest: str) -> None: ...


@dataclass
class Registry:
    storage: RegistryStorage
    uploads: UploadSessions
    metrics: Metrics
    authorizer: Authorizer | None = None
    upstream: Upstream | None = None
    read_only: bool = False
    in_flight: int = 0  # requests whose answer is not fully sent yet (graceful shutdown waits on it)

    def _finished(self, _task: object) -> None:
        self.in_flight -= 1


REGISTRY = web.AppKey("registry", Registry)


def registry_of(request: web.Request) -> Registry:
    return request.app[REGISTRY]


def json_body(data: object, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=json.dumps(data).encode(),
        status=status,
        headers={"Content-Type": "application/json", **(headers or {})},
    )


def _page_size(request: web.Request) -> int | None:
    text = request.query.get("n")
    if text is None or text == "":
        return None
    try:
        number = int(text)
    except ValueError:
        raise RegistryError("PAGINATION_NUMBER_INVALID", detail={"n": text}) from None
    if number < 0:
        raise RegistryError("PAGINATION_NUMBER_INVALID", detail={"n": text})
    return number


def paginate(request: web.Request, items: list[str], path: str) -> tuple[list[str], dict[str, str]]:
    """Apply ``n``/``last`` and build the ``Link`` header for the next page."""
    last = request.query.get("last")
    if last:
        items = [item for item in items if item > last]
    number = _page_size(request)
    if number is None or len(items) <= number:
        return items, {}
    page = items[:number]
    if not page:
        return page, {}
    link = f'<{path}?n={number}&last={page[-1]}>; rel="next"'
    return page, {"Link": link}


def _content_range(header: str | None) -> tuple[int | None, int | None]:
    """``start-end`` (inclusive; some clients prefix ``bytes=``) → (start, length)."""
    if not header:
        return None, None
    match = re.fullmatch(r"(?:bytes[ =])?(\d+)-(\d+)(?:/\d+|/\*)?", header.strip())
    if not match:
        raise RegistryError("BLOB_UPLOAD_INVALID", f"invalid Content-Range {header!r}", status=416)
    start, end = int(match.group(1)), int(match.group(2))
    if end < start:
        raise RegistryError("BLOB_UPLOAD_INVALID", f"invalid Content-Range {header!r}", status=416)
    return start, end - start + 1


def _upload_headers(name: str, session: str, offset: int) -> dict[str, str]:
    return {
        "Location": f"/v2/{name}/blobs/uploads/{session}",
        "Range": f"0-{max(offset - 1, 0)}",
        "Docker-Upload-UUID": session,
        "Content-Length": "0",
    }


async def _read_limited(request: web.Request, limit: int) -> bytes:
    """The body, refused as soon as it grows past *limit* (a manifest is kept in memory whole)."""
    if request.content_length is not None and request.content_length > limit:
        raise RegistryError("SIZE_INVALID", f"manifest larger than {limit} bytes", status=413)
    chunks, size = [], 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise RegistryError("SIZE_INVALID", f"manifest larger than {limit} bytes", status=413)
        chunks.append(chunk)
    return b"".join(chunks)


async def _in_thread(function: Callable, *args: object) -> object:
    return await asyncio.get_running_loop().run_in_executor(None, function, *args)


# --- handlers -----------------------------------------------------------------------------------


async def base(request: web.Request) -> web.Response:
    return json_body({})


async def catalog(request: web.Request) -> web.Response:
    names = await _in_thread(registry_of(request).storage.repositories)
    page, headers = paginate(request, names, "/v2/_catalog")
    return json_body({"repositories": page}, headers=headers)


async def manifest(request: web.Request, name: str, reference: str) -> web.StreamResponse:
    registry = registry_of(request)
    storage = registry.storage
    if request.method in ("GET", "HEAD"):
        if registry.upstream is not None:
            await registry.upstream.ensure_manifest(name, reference)
        digest = storage.resolve(name, reference)
        media_type = storage.manifest_media_type(name, digest)
        headers = {"Docker-Content-Digest": digest, "Content-Type": media_type, "ETag": f'"{digest}"'}
        if request.method == "HEAD":
            headers["Content-Length"] = str(storage.content.size(digest))
            return web.Response(headers=headers)
        return web.Response(body=storage.manifest_bytes(digest), headers=headers)
    if request.method == "PUT":
        _writable(registry)
        data = await _read_limited(request, manifests.MAX_MANIFEST_SIZE)
        tags = request.query.getall("tag", [])
        digest, parsed = await _in_thread(
            storage.put_manifest, name, reference, data, request.headers.get("Content-Type"), tags
        )
        headers = {"Location": f"/v2/{name}/manifests/{digest}", "Docker-Content-Digest": digest}
        if parsed.subject:
            headers["OCI-Subject"] = parsed.subject
        return web.Response(status=201, headers=headers)
    if request.method == "DELETE":
        _writable(registry)
        await _in_thread(storage.delete_manifest, name, reference)
        return web.Response(status=202)
    raise RegistryError("UNSUPPORTED", status=405)


async def blob(request: web.Request, name: str, digest: str) -> web.StreamResponse:
    registry = registry_of(request)
    storage = registry.storage
    if request.method in ("GET", "HEAD"):
        check_digest(digest)
        if registry.upstream is not None:
            await registry.upstream.ensure_blob(name, digest)
        stat = storage.blob_stat(name, digest)
        headers = {
            "Docker-Content-Digest": digest,
            "Content-Type": "application/octet-stream",
            "ETag": f'"{digest}"',
            "Cache-Control": "max-age=31536000",
            "Accept-Ranges": "bytes",
        }
        if request.method == "HEAD":
            headers["Content-Length"] = str(stat.st_size)
            return web.Response(headers=headers)
        return web.FileResponse(storage.blob_path(digest), headers=headers)
    if request.method == "DELETE":
        _writable(registry)
        storage.delete_blob(name, digest)
        return web.Response(status=202, headers={"Docker-Content-Digest": digest})
    raise RegistryError("UNSUPPORTED", status=405)


async def start_upload(request: web.Request, name: str) -> web.Response:
    registry = registry_of(request)
    _writable(registry)
    if request.method != "POST":
        raise RegistryError("UNSUPPORTED", status=405)
    mount, source = request.query.get("mount"), request.query.get("from")
    if mount and source and not request.get("mount_denied"):
        check_digest(mount)
        if registry.storage.mount_blob(name, source, mount):
            return web.Response(
                status=201, headers={"Location": f"/v2/{name}/blobs/{mount}", "Docker-Content-Digest": mount}
            )
    uploads = registry.uploads
    session = uploads.start(name)
    digest = request.query.get("digest")
    if digest:
        check_digest(digest)
        try:
            await uploads.append(name, session, request.content.iter_any(), None, request.content_length)
            await _in_thread(uploads.finish, name, session, digest)
        except BaseException:
            uploads.cancel(name, session)
            raise
        return web.Response(
            status=201,
            headers={"Location": f"/v2/{name}/blobs/{digest}", "Docker-Content-Digest": digest},
        )
    return web.Response(status=202, headers=_upload_headers(name, session, 0))


async def upload(request: web.Request, name: str, session: str) -> web.Response:
    registry = registry_of(request)
    uploads = registry.uploads
    if request.method == "GET":
        offset = uploads.offset(name, session)
        headers = _upload_headers(name, session, offset)
        return web.Response(status=204, headers=headers)
    _writable(registry)
    if request.method == "PATCH":
        start, length = _content_range(request.headers.get("Content-Range"))
        if length is not None and request.content_length is not None and length != request.content_length:
            raise RegistryError("BLOB_UPLOAD_INVALID", "Content-Range and Content-Length differ", status=416)
        offset = await uploads.append(
            name, session, request.content.iter_any(), start, request.content_length
        )
        return web.Response(status=202, headers=_upload_headers(name, session, offset))
    if request.method == "PUT":
        digest = request.query.get("digest")
        if not digest:
            raise RegistryError("DIGEST_INVALID", "the digest query parameter is required")
        check_digest(digest)
        if request.can_read_body:
            start, _ = _content_range(request.headers.get("Content-Range"))
            await uploads.append(name, session, request.content.iter_any(), start, request.content_length)
        else:
            uploads.offset(name, session)  # BLOB_UPLOAD_UNKNOWN before anything else
        await _in_thread(uploads.finish, name, session, digest)
        return web.Response(
            status=201,
            headers={"Location": f"/v2/{name}/blobs/{digest}", "Docker-Content-Digest": digest},
        )
    if request.method == "DELETE":
        uploads.cancel(name, session)
        return web.Response(status=204)
    raise RegistryError("UNSUPPORTED", status=405)


async def tags_list(request: web.Request, name: str) -> web.Response:
    if request.method not in ("GET", "HEAD"):
        raise RegistryError("UNSUPPORTED", status=405)
    tags = registry_of(request).storage.tags(name)
    page, headers = paginate(request, tags, f"/v2/{name}/tags/list")
    return json_body({"name": name, "tags": page}, headers=headers)


async def referrers(request: web.Request, name: str, digest: str) -> web.Response:
    if request.method not in ("GET", "HEAD"):
        raise RegistryError("UNSUPPORTED", status=405)
    check_digest(digest, "DIGEST_INVALID")
    found = registry_of(request).storage.referrers(name, digest)
    headers = {"Content-Type": manifests.OCI_INDEX}
    wanted = request.query.get("artifactType")
    if wanted:
        found = [item for item in found if item.get("artifactType") == wanted]
        headers["OCI-Filters-Applied"] = "artifactType"
    index = {"schemaVersion": 2, "mediaType": manifests.OCI_INDEX, "manifests": found}
    return web.Response(body=json.dumps(index).encode(), headers=headers)


def _writable(registry: Registry) -> None:
    if registry.read_only:
        raise RegistryError("UNSUPPORTED", "the registry is read-only", status=405)


# --- dispatch -----------------------------------------------------------------------------------


def _route(tail: str) -> tuple[str, dict[str, str]]:
    if tail == "":
        return "base", {}
    if tail == "_catalog":
        return "catalog", {}
    for kind, pattern in _ROUTES:
        match = pattern.fullmatch(tail)
        if match:
            return kind, match.groupdict()
    return "unknown", {}


async def _call(request: web.Request, kind: str, params: dict[str, str]) -> web.StreamResponse:
    if kind == "base":
        return await base(request)
    if kind == "catalog":
        return await catalog(request)
    if kind == "unknown":
        raise RegistryError("UNSUPPORTED", "no such endpoint", status=404)
    name = check_name(params.pop("name"))
    if kind == "manifest":
        return await manifest(request, name, params["reference"])
    if kind == "blob":
        return await blob(request, name, params["digest"])
    if kind == "uploads":
        return await start_upload(request, name)
    if kind == "upload":
        return await upload(request, name, params["session"])
    if kind == "tags":
        return await tags_list(request, name)
    return await referrers(request, name, params["digest"])


def _required_access(
    request: web.Request, kind: str, params: dict[str, str]
) -> tuple[tuple[str, str] | None, list[str]]:
    if kind == "base" or kind == "unknown":
        return None, []
    if kind == "catalog":
        return ("registry", "catalog"), ["*"]
    action = _ACTIONS.get(request.method, "pull")
    if kind == "upload" and action == "delete":
        action = "push"  # cancelling one's own upload is part of pushing
    actions = ["pull", "push"] if action == "push" else [action]
    return ("repository", params["name"]), actions


async def dispatch(request: web.Request) -> web.StreamResponse:
    registry = registry_of(request)
    kind, params = _route(request.match_info["tail"])
    request["route"] = kind
    if registry.authorizer is not None:
        resource, actions = _required_access(request, kind, params)
        request["user"] = await registry.authorizer.authorize(request, resource, actions)
        source = request.query.get("from") if kind == "uploads" else None
        if source and resource is not None:
            try:
                await registry.authorizer.authorize(request, ("repository", source), ["pull"])
            except RegistryError:
                # No read access to the source: no mount, an ordinary upload instead (as distribution).
                request["mount_denied"] = True
    return await _call(request, kind, params)


@web.middleware
async def registry_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Errors as the spec's JSON, with the spec's status; nothing else escapes as a bare 500."""
    registry = registry_of(request)
    task = asyncio.current_task()
    if task is not None:
        # The task also sends the response (a blob may still be streaming after we return).
        registry.in_flight += 1
        task.add_done_callback(registry._finished)
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except KapalError as error:
        failure = from_kapal_error(error)
        return web.Response(
            body=failure.body() if request.method != "HEAD" else None,
            status=failure.http_status,
            headers={"Content-Type": "application/json", **failure.headers},
        )
    except (ConnectionResetError, asyncio.CancelledError):
        raise
    except OSError as error:
        log.error("storage error on %s %s: %s", request.method, request.path, error)
        failure = RegistryError("UNKNOWN", storage_error(error, "storage").message)
        return web.Response(body=failure.body(), status=500, headers={"Content-Type": "application/json"})
    except Exception:
        log.exception("internal error on %s %s", request.method, request.path)
        failure = RegistryError("UNKNOWN", "internal error")
        return web.Response(body=failure.body(), status=500, headers={"Content-Type": "application/json"})


async def _on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(API_VERSION_HEADER)


class AccessLogger(AbstractAccessLogger):
    """Called by aiohttp once per answered request: counts it and logs one JSON line."""

    metrics: Metrics  # set by access_logger_for()

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time_taken: float) -> None:
        sent = response.body_length
        route = request.get("route", "other")
        self.metrics.observe(
            request.method, route, response.status, time_taken, sent, request.content_length or 0
        )
        if self.logger.isEnabledFor(logging.INFO):
            self.logger.info(
                json.dumps(
                    {
                        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        "remote": request.remote,
                        "user": request.get("user") or None,
                        "method": request.method,
                        "path": request.path_qs,
                        "status": response.status,
                        "bytes": sent,
                        "duration_ms": round(time_taken * 1000, 3),
                        "user_agent": request.headers.get("User-Agent"),
                    },
                    separators=(",", ":"),
                )
            )


def access_logger_for(registry: Registry) -> type[AccessLogger]:
    return type("RegistryAccessLogger", (AccessLogger,), {"metrics": registry.metrics})


async def health(request: web.Request) -> web.Response:
    storage = registry_of(request).storage
    try:
        await _in_thread(storage.lock_path.stat)
    except OSError as error:
        return json_body({"status": "unhealthy", "error": str(error)}, status=503)
    return json_body({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    return web.Response(
        text=registry_of(request).metrics.render(), content_type="text/plain", charset="utf-8"
    )


def make_app(registry: Registry, extra_routes: list[web.RouteDef] | None = None) -> web.Application:
    app = web.Application(middlewares=[registry_middleware], client_max_size=1 << 40)
    app[REGISTRY] = registry
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    app.router.add_route("*", "/v2/{tail:.*}", dispatch)
    if extra_routes:
        app.router.add_routes(extra_routes)
    app.on_response_prepare.append(_on_prepare)
    return app
