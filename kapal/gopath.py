"""Go's path rules (``filepath.Clean/Base/Dir/Join``) and go-archive's trailing-``/.`` rules.

``docker cp`` decides what to copy by these exact rules on both sides of the wire, so the CLI and
the daemon share one copy. Import-cheap: the CLI's start-up path uses it.
"""

from __future__ import annotations

import posixpath

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


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


def follow_links(
    path: str,
    link_target: Callable[[list[str]], str | None],
    too_many: str | None = None,
    max_links: int = 255,
) -> list[str]:
    """The components of *path* with every symlink followed, never above the root
    (``symlink.FollowSymlinkInScope``).

    *link_target* gives the target of the link the components name, or None when they
    name no link (or nothing). Absolute targets restart from the root, as inside a
    container. Past *max_links* links, InvalidArgument with *too_many* as its message.
    """
    parts = [p for p in path.split("/") if p and p != "."]
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        target = link_target([*resolved, part])
        if target is None:
            resolved.append(part)
            continue
        hops += 1
        if hops > max_links:
            from kapal.errors import InvalidArgument

            raise InvalidArgument(too_many or f"too many links in {path}")
        if target.startswith("/"):
            resolved = []
        parts = [p for p in target.split("/") if p and p != "."] + parts
    return resolved
