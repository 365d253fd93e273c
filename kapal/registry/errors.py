"""The Distribution Spec's error codes, and the one place kapal errors become them.

Clients branch on the ``code`` of ``{"errors": [{"code", "message", "detail"}]}``
(skopeo retries on BLOB_UPLOAD_UNKNOWN, docker falls back on NAME_UNKNOWN…),
so every failure a handler raises is one of these, with the status the spec gives it.
"""

from __future__ import annotations

import json

from kapal.errors import Conflict, DigestMismatch, Forbidden, InvalidArgument, KapalError, NotFound
from kapal.errors import Unauthorized as KapalUnauthorized

# code -> (HTTP status, default message), from the spec's error code table and distribution's
# registry/api/errcode (UNAUTHORIZED/DENIED/UNSUPPORTED/TOOMANYREQUESTS have no resource).
CODES: dict[str, tuple[int, str]] = {
    "BLOB_UNKNOWN": (404, "blob unknown to registry"),
    "BLOB_UPLOAD_INVALID": (400, "blob upload invalid"),
    "BLOB_UPLOAD_UNKNOWN": (404, "blob upload unknown to registry"),
    "DIGEST_INVALID": (400, "provided digest did not match uploaded content"),
    "MANIFEST_BLOB_UNKNOWN": (400, "manifest references a manifest or blob unknown to registry"),
    "MANIFEST_INVALID": (400, "manifest invalid"),
    "MANIFEST_UNKNOWN": (404, "manifest unknown to registry"),
    "NAME_INVALID": (400, "invalid repository name"),
    "NAME_UNKNOWN": (404, "repository name not known to registry"),
    "SIZE_INVALID": (400, "provided length did not match content length"),
    "UNAUTHORIZED": (401, "authentication required"),
    "DENIED": (403, "requested access to the resource is denied"),
    "UNSUPPORTED": (405, "the operation is unsupported"),
    "TOOMANYREQUESTS": (429, "too many requests"),
    "TAG_INVALID": (400, "manifest tag did not match URI"),
    "PAGINATION_NUMBER_INVALID": (400, "invalid number of results requested"),
    "UNKNOWN": (500, "unknown error"),
    "UNAVAILABLE": (503, "service unavailable"),
}


class RegistryError(KapalError):
    """A failure with a spec error code; its HTTP status comes from the code."""

    def __init__(
        self, code: str, message: str | None = None, detail: object = None, status: int | None = None
    ) -> None:
        default_status, default_message = CODES[code]
        super().__init__(message or default_message)
        self.code = code
        self.detail = detail
        self.http_status = status or default_status
        self.headers: dict[str, str] = {}

    def body(self) -> bytes:
        error: dict[str, object] = {"code": self.code, "message": self.message}
        if self.detail is not None:
            error["detail"] = self.detail
        return json.dumps({"errors": [error]}).encode()


def from_kapal_error(error: KapalError) -> RegistryError:
    """Map the engine's error classes to a spec code (for errors raised outside the handlers)."""
    if isinstance(error, RegistryError):
        return error
    if isinstance(error, DigestMismatch):
        return RegistryError("DIGEST_INVALID", error.message)
    if isinstance(error, InvalidArgument):
        return RegistryError("UNSUPPORTED", error.message, status=400)
    if isinstance(error, NotFound):
        return RegistryError("NAME_UNKNOWN", error.message)
    if isinstance(error, KapalUnauthorized):
        return RegistryError("UNAUTHORIZED", error.message)
    if isinstance(error, Forbidden):
        return RegistryError("DENIED", error.message)
    if isinstance(error, Conflict):
        return RegistryError("UNSUPPORTED", error.message, status=409)
    return RegistryError("UNKNOWN", error.message, status=error.http_status)
