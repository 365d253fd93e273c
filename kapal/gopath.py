"""Go's path rules (``filepath.Clean/Base/Dir/Join``) and go-archive's trailing-``/.`` rules.

``docker cp`` decides what to copy by these exact rules on both sides of the wire, so the CLI and
the daemon share one copy. Import-cheap: the CLI's start-up path uses it.
"""

from __future__ import annotations

import posixpath


def clean(path: str) -> str:
    """``filepath.Clean``: POSIX normalisation, but ``//x`` is ``/x``."""
    cleaned = posixpath.normpath(path) if path else "."
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    return cleaned


def base(path: str) -> str:
    """``filepath.Base``: the last element, trailing slashes ignored; ``/`` for the root."""
    if not path:
        return "."
    stripped = path.rstrip("/")
    return stripped.rpartition("/")[2] if stripped else "/"


def dirname(path: str) -> str:
    """``filepath.Dir``."""
    return clean(path[: path.rfind("/") + 1])


def join(*parts: str) -> str:
    """``filepath.Join``: empty parts dropped, the result cleaned."""
    joined = "/".join(part for part in parts if part)
    return clean(joined) if joined else ""


def specifies_current_dir(path: str) -> bool:
    return base(path) == "."


def asserts_directory(path: str) -> bool:
    """A trailing ``/`` or ``/.`` says "this must be a directory"."""
    return path.endswith("/") or specifies_current_dir(path)


def preserve_trailing_dot_or_separator(cleaned: str, original: str) -> str:
    """go-archive's ``PreserveTrailingDotOrSeparator``: cleaning must not lose ``/.`` or ``/``."""
    if not specifies_current_dir(cleaned) and specifies_current_dir(original):
        if not cleaned.endswith("/"):
            cleaned += "/"
        cleaned += "."
    if not cleaned.endswith("/") and original.endswith("/"):
        cleaned += "/"
    return cleaned
