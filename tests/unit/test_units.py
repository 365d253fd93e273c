"""go-units parity: expected strings are what docker's Go code prints.

Sources: docker/go-units v0.5.0 size_test.go / duration_test.go, Go's ``%g``
rules, and outputs captured from the docker 28 CLI (``docker images`` sizes and
ages, ``docker create --memory X`` flag errors).
"""

from __future__ import annotations

import math

import pytest

from kapal.units import (
    bytes_size,
    from_human_size,
    human_duration,
    human_size,
    human_size_with_precision,
    parse_size,
    time_ago,
)

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB
PiB = 1024 * TiB

MINUTE = 60
HOUR = 60 * MINUTE
DAY = 24 * HOUR
WEEK = 7 * DAY
MONTH = 30 * DAY
YEAR = 365 * DAY


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (0, "0B"),
        (1, "1B"),
        (999, "999B"),
        (1000, "1kB"),
        (1024, "1.02kB"),
        (1500, "1.5kB"),
        (1234, "1.23kB"),
        (999_499, "999kB"),
        # 999.5 stays below the 1000 threshold but %.3g rounds it (half-even)
        # to 1e+03: Go prints exactly this.
        (999_500, "1e+03kB"),
        (4_261_254, "4.26MB"),
        (7_800_000, "7.8MB"),
        (1_000_000, "1MB"),
        (123_456_789, "123MB"),
        (1_234_567_890, "1.23GB"),
        (10**12, "1TB"),
        (10**15, "1PB"),
        (10**18, "1EB"),
        (10**27, "1e+03YB"),
        (-1, "-1B"),
        (1.5, "1.5B"),
        (0.001, "0.001B"),
        (math.inf, "+InfYB"),
        (math.nan, "NaNB"),
    ],
)
def test_human_size(size: float, expected: str) -> None:
    assert human_size(size) == expected


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        # go-units TestHumanSize (precision 4)
        (1000, "1kB"),
        (1024, "1.024kB"),
        (1_000_000, "1MB"),
        (1_048_576, "1.049MB"),
        (2_000_000, "2MB"),
        (3.42e9, "3.42GB"),
        (5.372e12, "5.372TB"),
        (2.22e15, "2.22PB"),
        (1e28, "1e+04YB"),
    ],
)
def test_human_size_precision_4(size: float, expected: str) -> None:
    assert human_size_with_precision(size, 4) == expected


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (0, "0B"),
        (1023, "1023B"),
        (1024, "1KiB"),
        (1536, "1.5KiB"),
        (MiB, "1MiB"),
        (1.5 * MiB, "1.5MiB"),
        (2 * MiB, "2MiB"),
        (3.42 * GiB, "3.42GiB"),
        (5.372 * TiB, "5.372TiB"),
        (2.22 * PiB, "2.22PiB"),
        (KiB**5 * PiB, "1.049e+06YiB"),
    ],
)
def test_bytes_size(size: float, expected: str) -> None:
    assert bytes_size(size) == expected


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (-5, "Less than a second"),
        (0, "Less than a second"),
        (0.45, "Less than a second"),
        (0.999, "Less than a second"),
        (1, "1 second"),
        (1.9, "1 second"),
        (2, "2 seconds"),
        (45, "45 seconds"),
        (59, "59 seconds"),
        (59.99, "59 seconds"),
        (60, "About a minute"),
        (119, "About a minute"),
        (3 * MINUTE, "3 minutes"),
        (35 * MINUTE + 40, "35 minutes"),
        (59 * MINUTE, "59 minutes"),
        (HOUR, "About an hour"),
        (HOUR + 29 * MINUTE, "About an hour"),
        (HOUR + 30 * MINUTE, "2 hours"),  # hours round to nearest
        (HOUR + 31 * MINUTE, "2 hours"),
        (3 * HOUR + 29 * MINUTE, "3 hours"),
        (3 * HOUR + 31 * MINUTE, "4 hours"),
        (24 * HOUR, "24 hours"),
        (DAY + 12 * HOUR, "36 hours"),
        (47 * HOUR + 29 * MINUTE, "47 hours"),
        (47 * HOUR + 30 * MINUTE, "2 days"),
        (2 * DAY, "2 days"),
        (7 * DAY, "7 days"),
        (13 * DAY + 5 * HOUR, "13 days"),
        (2 * WEEK, "2 weeks"),
        (2 * WEEK + 4 * DAY, "2 weeks"),
        (4 * WEEK + 3 * DAY, "4 weeks"),
        (MONTH, "4 weeks"),
        (MONTH + 2 * WEEK, "6 weeks"),
        (2 * MONTH, "2 months"),
        (5 * MONTH + 2 * WEEK, "5 months"),
        (400 * DAY, "13 months"),
        (24 * MONTH, "24 months"),
        (24 * MONTH + 2 * WEEK, "2 years"),
        (3 * YEAR + 2 * MONTH, "3 years"),
        (10 * YEAR, "10 years"),
    ],
)
def test_human_duration(seconds: float, expected: str) -> None:
    assert human_duration(seconds) == expected


def test_human_duration_saturates_like_time_sub() -> None:
    # time.Time.Sub clamps to ~292 years; nothing overflows.
    assert human_duration(1e30) == "292 years"
    assert human_duration(math.nan) == "Less than a second"


@pytest.mark.parametrize(
    ("created", "now", "expected"),
    [
        (1_000, 1_000, "Less than a second ago"),
        (1_000, 1_000.5, "Less than a second ago"),
        (1_000, 1_090, "About a minute ago"),
        (1_000.9, 1_001.5, "1 second ago"),  # docker truncates the API timestamp
        (1_000, 1_000 + 3 * DAY, "3 days ago"),
        (1_000, 1_000 + 400 * DAY, "13 months ago"),
        (2_000, 1_000, "Less than a second ago"),  # clock skew
    ],
)
def test_time_ago(created: float, now: float, expected: str) -> None:
    assert time_ago(created, now) == expected


def test_time_ago_uses_current_clock() -> None:
    import time

    assert time_ago(time.time() - 3 * DAY) == "3 days ago"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("64m", 64 * MiB),
        ("1g", GiB),
        ("512k", 512 * KiB),
        ("100", 100),
        ("1.5g", int(1.5 * GiB)),
        ("32", 32),
        ("32b", 32),
        ("32B", 32),
        ("32k", 32 * KiB),
        ("32K", 32 * KiB),
        ("32kb", 32 * KiB),
        ("32Kb", 32 * KiB),
        ("32Kib", 32 * KiB),
        ("32KIB", 32 * KiB),
        ("32Mb", 32 * MiB),
        ("32Gb", 32 * GiB),
        ("32Tb", 32 * TiB),
        ("32Pb", 32 * PiB),
        ("32PB", 32 * PiB),
        ("32P", 32 * PiB),
        ("32.3", 32),
        ("32.3 mb", int(32.3 * MiB)),
        ("0.3MB", int(0.3 * MiB)),
        ("1 g", GiB),
        ("1 ", 1),
        ("5.", 5),
        (".5k", 512),
        ("1e3", 1000),
        ("1e3k", 1000 * KiB),
        ("0x1p4", 16),
        ("1_000", 1000),
        ("-0", 0),
        # out of int64 range: Go's float->int64 conversion on amd64
        ("1e300p", -(2**63)),
        ("+inf k", -(2**63)),
    ],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "invalid size: ''"),
        ("hello", "invalid size: 'hello'"),
        ("-32", "invalid size: '-32'"),
        ("-1k", "invalid size: '-1k'"),
        (" 32 ", 'strconv.ParseFloat: parsing " 32": invalid syntax'),
        ("32m b", 'strconv.ParseFloat: parsing "32m": invalid syntax'),
        ("1  g", 'strconv.ParseFloat: parsing "1 ": invalid syntax'),
        ("1g ", 'strconv.ParseFloat: parsing "1g": invalid syntax'),
        ("0x10", 'strconv.ParseFloat: parsing "0x10": invalid syntax'),
        ("1.5.5", 'strconv.ParseFloat: parsing "1.5.5": invalid syntax'),
        (".", 'strconv.ParseFloat: parsing ".": invalid syntax'),
        ("1e400", 'strconv.ParseFloat: parsing "1e400": value out of range'),
        ("32bm", "invalid suffix: 'bm'"),
        ("1x", "invalid suffix: 'x'"),
        ("1ib", "invalid suffix: 'ib'"),
        ("1mx", "invalid suffix: 'mx'"),
        ("1mbb", "invalid suffix: 'mbb'"),
        ("1KIBB", "invalid suffix: 'KIBB'"),  # too long: reported before lower-casing
        ("1é", "invalid suffix: 'é'"),
    ],
)
def test_parse_size_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError) as exc:
        parse_size(text)
    assert str(exc.value) == message


def test_from_human_size_is_decimal() -> None:
    assert from_human_size("1k") == 1000
    assert from_human_size("1.5MB") == 1_500_000
    assert from_human_size("2G") == 2 * 10**9
