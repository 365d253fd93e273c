"""Registry answers turned into kapal's typed errors, each one line a user can act on.

Registries explain a failure in an ``{"errors": [{"code", "message"}]}`` body
(distribution-spec "Error Codes"); the code decides the class, the text keeps
Docker's wording (``manifest unknown``, ``denied: requested access to the
resource is denied``) because scripts and users grep for it.
"""

from __future__ import annotations

import json

from kapal.errors import Forbidden, InvalidArgument, KapalError, NotFound, Unauthorized, Unavailable


class RegistryUnreachable(Unavailable):
    """The registry could not be reached or broke the connection; a retry may succeed."""


def registry_error_text(body: bytes) -> tuple[str, str]:
    """(code, "code: message" text) of a registry error body; empty code when there is none."""
    try:
        document = json.loads(body)
        first = document["errors"][0]
        code = str(first.get("code", "")).upper()
        message = str(first.get("message", "")) or code.lower().replace("_", " ")
        return code, f"{code.lower().replace('_', ' ')}: {message}"
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        text = body.decode(errors="replace").strip().splitlines()
        return "", (text[0][:200] if text else "")


def from_response(status: int, body: bytes, what: str) -> KapalError:
    """The error for a failed registry request about *what* (``manifest for x:y``, ``blob sha256:…``)."""
    code, text = registry_error_text(body)
    if status == 401 or code == "UNAUTHORIZED":
        return Unauthorized(f"{what}: {text or 'unauthorized: authentication required'}")
    if status == 403 or code == "DENIED":
        return Forbidden(f"{what}: {text or 'denied: requested access to the resource is denied'}")
    if status == 404 or code in ("MANIFEST_UNKNOWN", "BLOB_UNKNOWN", "NAME_UNKNOWN"):
        if code == "NAME_UNKNOWN":
            return NotFound(f"{what} not found: {text}")
        return NotFound(f"{what} not found: {text or 'manifest unknown'}")
    if status == 429 or code == "TOOMANYREQUESTS":
        return Unavailable(f"{what}: {text or 'toomanyrequests: too many requests'}")
    if status >= 500:
        return RegistryUnreachable(f"{what}: registry answered {status}{': ' + text if text else ''}")
    return InvalidArgument(f"{what}: registry answered {status}{': ' + text if text else ''}")
