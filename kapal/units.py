"""Human-readable sizes and durations, byte-for-byte like docker's ``go-units``.

The docker CLI prints image sizes, ``CREATED`` columns and parses ``--memory``
style flags through ``github.com/docker/go-units`` (v0.5.0 is what docker 28
vendors).  Scripts compare that output textually, so this module reproduces the
Go results exactly -- including Go's ``%g`` formatting, ``time.Duration``
truncation rules and the error texts -- rather than offering a "nicer" Python
rendition.

Only cheap stdlib modules are imported: this sits on the CLI start-up path.
"""

from __future__ import annotations

import math
import time

__all__ = [
    "bytes_size",
    "from_human_size",
    "human_duration",
    "human_size",
    "human_size_with_precision",
    "parse_size",
    "time_ago",
]

_DECIMAL_ABBRS = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")
_BINARY_ABBRS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB")

_DECIMAL_MAP = {"k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4, "p": 1000**5}
_BINARY_MAP = {"k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4, "p": 1024**5}

_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1

_NS_PER_SECOND = 1_000_000_000
_NS_PER_MINUTE = 60 * _NS_PER_SECOND
_NS_PER_HOUR = 60 * _NS_PER_MINUTE


# --------------------------------------------------------------------------
# sizes


def _size_and_unit(size: float, base: float, abbrs: tuple[str, ...]) -> tuple[float, str]:
    # Same loop as go-units getSizeAndUnit: negative and NaN sizes never divide.
    i = 0
    limit = len(abbrs) - 1
    while size >= base and i < limit:
        size = size / base
        i += 1
    return size, abbrs[i]


def _go_g(value: float, precision: int) -> str:
    """Go's ``%.{precision}g``.

    Python's ``%g`` uses the same exponent threshold and trailing-zero removal
    as Go for finite numbers; only the spelling of the special values differs.
    """
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return f"{value:.{precision}g}"


def human_size_with_precision(size: float, precision: int) -> str:
    """``units.HumanSizeWithPrecision``: decimal units, ``%.{precision}g``."""
    value, unit = _size_and_unit(float(size), 1000.0, _DECIMAL_ABBRS)
    return _go_g(value, precision) + unit


def human_size(size: float) -> str:
    """Size as docker prints it in ``docker images``/``docker ps -s`` (``4.26MB``).

    docker calls ``units.HumanSizeWithPrecision(n, 3)`` for its tables, not the
    4-digit ``HumanSize``, so three significant digits is the default here.
    """
    return human_size_with_precision(size, 3)


def bytes_size(size: float) -> str:
    """``units.BytesSize``: binary units with four significant digits (``1.5MiB``)."""
    value, unit = _size_and_unit(float(size), 1024.0, _BINARY_ABBRS)
    return _go_g(value, 4) + unit


def _go_int64(value: float) -> int:
    # Go's float64 -> int64 conversion of an out-of-range value is
    # implementation defined; on amd64 (what docker ships) it yields MinInt64.
    if math.isnan(value) or not (_INT64_MIN <= value < 2.0**63):
        return _INT64_MIN
    return int(value)


def _parse_size(text: str, units: dict[str, int]) -> int:
    # go-units v0.5.0 parseSize: the number ends at the last digit, dot or space.
    sep = max(text.rfind(c) for c in "0123456789. ")
    if sep == -1:
        raise ValueError(f"invalid size: '{text}'")
    num = text[:sep] if text[sep] == " " else text[: sep + 1]
    sfx = text[sep + 1 :]

    size = _go_parse_float(num)
    if size < 0:  # go-units rejects negative sizes for backward compatibility
        raise ValueError(f"invalid size: '{text}'")
    if not sfx:
        return _go_int64(size)

    # Go measures and indexes the suffix in bytes.
    if len(sfx.encode("utf-8", "surrogatepass")) > 3:
        raise ValueError(f"invalid suffix: '{sfx}'")
    lowered = "".join(_simple_lower(c) for c in sfx)
    raw = lowered.encode("utf-8", "surrogatepass")
    bad = ValueError(f"invalid suffix: '{lowered}'")
    if raw[:1] == b"b":
        if len(raw) > 1:
            raise bad
        return _go_int64(size)
    mul = units.get(chr(raw[0]))
    if mul is None:
        raise bad
    size *= mul
    if (len(raw) == 2 and raw[1:] != b"b") or (len(raw) == 3 and raw[1:] != b"ib"):
        raise bad
    return _go_int64(size)


def parse_size(text: str) -> int:
    """``units.RAMInBytes``: ``"64m"`` -> 67108864 (binary multiples).

    Used for ``--memory``, ``--shm-size`` and friends.  Raises ``ValueError``
    carrying go-units' message (``invalid size: 'x'``, ``invalid suffix: 'x'``
    or strconv's ``strconv.ParseFloat: parsing "x": invalid syntax``) so the
    CLI can wrap it exactly like docker does.
    """
    return _parse_size(text, _BINARY_MAP)


def from_human_size(text: str) -> int:
    """``units.FromHumanSize``: like :func:`parse_size` but with SI (1000) multiples."""
    return _parse_size(text, _DECIMAL_MAP)


def _simple_lower(ch: str) -> str:
    # Go's strings.ToLower maps rune by rune; Python's full case mapping can
    # change the length (e.g. U+0130), which Go never does.
    low = ch.lower()
    return low if len(low) == 1 else ch


# --------------------------------------------------------------------------
# strconv.ParseFloat


def _underscore_ok(s: str) -> bool:
    # strconv.underscoreOK: "_" only between digits (or after a base prefix).
    saw = "^"
    i = 0
    if s[:1] in ("+", "-"):
        s = s[1:]
    hexa = False
    if len(s) >= 2 and s[0] == "0" and s[1].lower() in "box":
        i = 2
        saw = "0"
        hexa = s[1].lower() == "x"
    while i < len(s):
        c = s[i]
        if "0" <= c <= "9" or (hexa and "a" <= c.lower() <= "f"):
            saw = "0"
        elif c == "_":
            if saw != "0":
                return False
            saw = "_"
        else:
            if saw == "_":
                return False
            saw = "!"
        i += 1
    return saw != "_"


def _float_syntax_ok(s: str) -> bool:
    """Whether ``s`` is a complete Go floating-point literal (strconv.readFloat)."""
    i = 0
    n = len(s)
    if i < n and s[i] in "+-":
        i += 1
    hexa = i + 2 < n and s[i] == "0" and s[i + 1] in "xX"
    if hexa:
        i += 2
    exp_char = "p" if hexa else "e"
    underscores = False
    sawdot = False
    sawdigits = False
    while i < n:
        c = s[i]
        if c == "_":
            underscores = True
        elif c == ".":
            if sawdot:
                break
            sawdot = True
        elif "0" <= c <= "9" or (hexa and c.lower() in "abcdef"):
            sawdigits = True
        else:
            break
        i += 1
    if not sawdigits:
        return False
    if i < n and s[i].lower() == exp_char:
        i += 1
        if i < n and s[i] in "+-":
            i += 1
        if i >= n or not ("0" <= s[i] <= "9"):
            return False
        while i < n and ("0" <= s[i] <= "9" or s[i] == "_"):
            underscores = underscores or s[i] == "_"
            i += 1
    elif hexa:
        return False  # hexadecimal mantissas require a p exponent
    if i != n:
        return False
    return not underscores or _underscore_ok(s)


def _parse_float_error(s: str, reason: str) -> ValueError:
    from kapal.cli.template import go_quote  # lazy: only on the error path

    return ValueError(f"strconv.ParseFloat: parsing {go_quote(s)}: {reason}")


def _go_parse_float(s: str) -> float:
    """``strconv.ParseFloat(s, 64)``, raising ``ValueError`` with Go's message."""
    # strconv's special(): an optionally signed "inf"/"infinity", or a bare "nan".
    body = s[1:] if s[:1] in ("+", "-") else s
    if body.lower() in ("inf", "infinity"):
        return -math.inf if s[:1] == "-" else math.inf
    if s.lower() == "nan":
        return math.nan
    if not s.isascii() or not _float_syntax_ok(s):
        raise _parse_float_error(s, "invalid syntax")
    clean = s.replace("_", "")
    if "x" in clean.lower():
        value = float.fromhex(clean)
    else:
        value = float(clean)
    if math.isinf(value):
        raise _parse_float_error(s, "value out of range")
    return value


# --------------------------------------------------------------------------
# durations


def _human_duration_ns(d: int) -> str:
    # go-units HumanDuration, computing Seconds()/Minutes()/Hours() the same
    # way time.Duration does (integer quotient + float remainder) so that the
    # rounding at unit boundaries is identical.
    if d < 1 * _NS_PER_SECOND:
        return "Less than a second"
    seconds = d // _NS_PER_SECOND
    if seconds == 1:
        return "1 second"
    if seconds < 60:
        return f"{seconds} seconds"
    minutes = int(float(d // _NS_PER_MINUTE) + float(d % _NS_PER_MINUTE) / (60 * 1e9))
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours_f = float(d // _NS_PER_HOUR) + float(d % _NS_PER_HOUR) / (60 * 60 * 1e9)
    hours = int(hours_f + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(hours_f) // 24 // 365} years"


def _seconds_to_ns(seconds: float) -> int:
    if math.isnan(seconds):
        return 0
    ns = seconds * 1e9
    if ns >= 2.0**63:
        return _INT64_MAX  # time.Time.Sub saturates
    if ns < -(2.0**63):
        return _INT64_MIN
    return int(round(ns))


def human_duration(seconds: float) -> str:
    """``units.HumanDuration`` for a duration given in (possibly fractional) seconds.

    Thresholds are Go's: under 1s is "Less than a second", minutes truncate,
    hours round to nearest, 48 hours and up switch to days, and so on.
    """
    return _human_duration_ns(_seconds_to_ns(seconds))


def time_ago(unix_seconds: float, now: float | None = None) -> str:
    """docker's ``CREATED``/``STATUS`` age: ``HumanDuration(now - t) + " ago"``.

    docker truncates the API timestamp to whole seconds (``time.Unix(int64(t), 0)``)
    but subtracts it from a nanosecond-precision ``time.Now()``; ``now`` lets
    callers and tests pin the clock.
    """
    now_ns = time.time_ns() if now is None else _seconds_to_ns(now)
    then_ns = int(unix_seconds) * _NS_PER_SECOND if math.isfinite(unix_seconds) else 0
    d = max(_INT64_MIN, min(_INT64_MAX, now_ns - then_ns))
    return _human_duration_ns(d) + " ago"


# --------------------------------------------------------------------------
# Go's time.ParseDuration

_DURATION_UNITS = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # U+00B5 micro sign
    "\u03bcs": 1_000,  # U+03BC Greek letter mu
    "ms": 1_000_000,
    "s": _NS_PER_SECOND,
    "m": _NS_PER_MINUTE,
    "h": _NS_PER_HOUR,
}


def _go_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_go_duration(text: str) -> int:
    """Go's ``time.ParseDuration`` in nanoseconds ("1m30s", "1.5h", "-2ms", "0"), with its errors.

    Dockerfile ``HEALTHCHECK --interval`` and ``docker run --health-*`` take Go durations.
    """
    invalid = ValueError("time: invalid duration " + _go_quote(text))
    s = text
    negative = False
    if s[:1] in ("-", "+"):
        negative = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise invalid
    total = 0
    limit = 1 << 63
    i = 0
    n = len(s)
    while i < n:
        if not (s[i] == "." or "0" <= s[i] <= "9"):
            raise invalid
        start = i
        whole = 0
        while i < n and "0" <= s[i] <= "9":
            whole = whole * 10 + ord(s[i]) - 48
            if whole > limit:
                raise invalid
            i += 1
        has_whole = i > start
        fraction, scale, has_fraction = 0, 1.0, False
        if i < n and s[i] == ".":
            i += 1
            start = i
            overflow = False
            while i < n and "0" <= s[i] <= "9":
                if not overflow:
                    if fraction > ((1 << 63) - 1) // 10:
                        overflow = True  # Go stops accumulating but keeps consuming digits
                    else:
                        fraction = fraction * 10 + ord(s[i]) - 48
                        scale *= 10
                i += 1
            has_fraction = i > start
        if not has_whole and not has_fraction:
            raise invalid
        start = i
        while i < n and not (s[i] == "." or "0" <= s[i] <= "9"):
            i += 1
        if i == start:
            raise ValueError("time: missing unit in duration " + _go_quote(text))
        unit_name = s[start:i]
        unit = _DURATION_UNITS.get(unit_name)
        if unit is None:
            raise ValueError(f"time: unknown unit {_go_quote(unit_name)} in duration {_go_quote(text)}")
        if whole > limit // unit:
            raise invalid
        value = whole * unit
        if fraction > 0:
            value += int(float(fraction) * (float(unit) / scale))
            if value > limit:
                raise invalid
        total += value
        if total > limit:
            raise invalid
    if negative:
        return -total
    if total > limit - 1:
        raise invalid
    return total
