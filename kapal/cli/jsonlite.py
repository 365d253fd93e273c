"""JSON for the CLI's hot path without importing ``json``.

``json`` imports ``re`` (and with it ``enum``): about 7 ms of a ``kapal run`` that
otherwise starts in 20. The encoder and scanner behind ``json`` are the C ones in
``_json``; this module drives them directly with ``json.dumps``'s and ``json.loads``'s
default settings, so the bytes are the same. Where ``_json`` is missing (another
Python implementation) the ``json`` module does the work.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_WHITESPACE = " \t\n\r"

try:
    import _json
except ImportError:  # pragma: no cover - CPython always has it
    _json = None


class _DecoderSettings:
    """The attributes ``_json``'s scanner reads from a ``json.JSONDecoder``."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}.__getitem__


def _unserializable(value: object) -> object:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


if _json is not None:
    _scan = _json.make_scanner(_DecoderSettings())
    _encode = _json.make_encoder(
        {}, _unserializable, _json.encode_basestring_ascii, None, ": ", ", ", False, False, True
    )

    def dumps(value: Any) -> str:
        """As ``json.dumps(value)``."""
        return "".join(_encode(value, 0))

    def raw_decode(text: str, index: int = 0) -> tuple[Any, int]:
        """The JSON value starting at *index* (after whitespace) and where it ends; ValueError if none."""
        length = len(text)
        while index < length and text[index] in _WHITESPACE:
            index += 1
        try:
            return _scan(text, index)
        except StopIteration as stop:
            raise ValueError(f"Expecting value: char {stop.value}") from None

else:  # pragma: no cover
    import json as _stdlib_json

    dumps = _stdlib_json.dumps
    _decoder = _stdlib_json.JSONDecoder()

    def raw_decode(text: str, index: int = 0) -> tuple[Any, int]:
        length = len(text)
        while index < length and text[index] in _WHITESPACE:
            index += 1
        return _decoder.raw_decode(text, index)


def loads(data: str | bytes | bytearray) -> Any:
    """As ``json.loads`` for UTF-8 text: ValueError on anything but one JSON value and whitespace."""
    text = data.decode() if isinstance(data, (bytes, bytearray)) else data
    if text.startswith("\ufeff"):
        raise ValueError("Unexpected UTF-8 BOM (decode using utf-8-sig)")
    value, end = raw_decode(text)
    if text[end:].strip(_WHITESPACE):
        raise ValueError(f"Extra data: char {end}")
    return value
