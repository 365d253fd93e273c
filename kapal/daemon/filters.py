"""The Engine API's ``filters`` parameter, in both encodings clients send.

The swagger file documents ``{"key": ["v1", "v2"]}``; the Go client sends the
older ``{"key": {"v1": true}}``. Both arrive here and leave as one shape.
"""

from __future__ import annotations

import fnmatch
import json
import re

from kapal.errors import InvalidArgument

Filters = dict[str, list[str]]


def parse_filters(text: str | None) -> Filters:
    if not text:
        return {}
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidArgument(f"invalid filters: {error}") from None
    if not isinstance(raw, dict):
        raise InvalidArgument("invalid filters: want a JSON object")
    out: Filters = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            out[key] = [str(k) for k, enabled in value.items() if enabled]
        elif isinstance(value, list):
            out[key] = [str(v) for v in value]
        elif isinstance(value, str):
            out[key] = [value]
        else:
            raise InvalidArgument(f"invalid filter value for {key!r}")
    return out


def check_keys(filters: Filters, allowed: set[str]) -> None:
    for key in filters:
        if key not in allowed:
            raise InvalidArgument(f"invalid filter '{key}'")


def bool_filter(filters: Filters, key: str) -> bool | None:
    values = filters.get(key)
    if not values:
        return None
    value = values[-1].lower()
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise InvalidArgument(f"invalid filter '{key}={values[-1]}'")


def labels_match(labels: dict[str, str] | None, wanted: list[str]) -> bool:
    """``label=key`` or ``label=key=value``: every one must hold."""
    labels = labels or {}
    for item in wanted:
        key, sep, value = item.partition("=")
        if key not in labels or (sep and labels[key] != value):
            return False
    return True


def glob_match(pattern: str, text: str) -> bool:
    """Go's path.Match semantics closely enough: ``*`` does not cross ``/``."""
    regex = fnmatch.translate(pattern).replace(".*", "[^/]*")
    return re.fullmatch(regex, text) is not None
