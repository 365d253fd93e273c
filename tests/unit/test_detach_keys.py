"""Docker's detach-key format and the scanner that finds the sequence in a stdin stream."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kapal.container.detach_keys import DEFAULT, DetachKeysError, EscapeScanner, parse


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (DEFAULT, b"\x10\x11"),
        ("ctrl-a", b"\x01"),
        ("ctrl-@,ctrl-[,ctrl-\\,ctrl-],ctrl-^,ctrl-_", b"\x00\x1b\x1c\x1d\x1e\x1f"),
        ("a,b", b"ab"),
        ("ctrl-Z", b"\x1a"),
        ("", b""),
    ],
)
def test_parse(keys: str, expected: bytes) -> None:
    assert parse(keys) == expected


@pytest.mark.parametrize("keys", ["ctrl-", "ctrl-1", "ctrl-ab", "shift-a", "ab"])
def test_parse_refuses(keys: str) -> None:
    with pytest.raises(DetachKeysError, match="Invalid detach keys"):
        parse(keys)


def test_scanner_holds_a_prefix_and_releases_it_on_mismatch() -> None:
    scanner = EscapeScanner(b"\x10\x11")
    assert scanner.feed(b"ls\x10") == (b"ls", False)
    assert scanner.feed(b"x") == (b"\x10x", False)
    assert scanner.feed(b"\x10\x10") == (b"\x10", False)
    assert scanner.feed(b"\x11rest") == (b"", True)


def test_scanner_across_reads_one_byte_at_a_time() -> None:
    scanner = EscapeScanner(b"\x10\x11")
    passed = b""
    for byte in b"echo hi\r\x10":
        data, done = scanner.feed(bytes([byte]))
        passed += data
        assert not done
    assert scanner.feed(b"\x11") == (b"", True)
    assert passed == b"echo hi\r"


@given(st.binary(max_size=200))
def test_scanner_passes_everything_without_the_sequence(data: bytes) -> None:
    scanner = EscapeScanner(b"\x10\x11")
    passed, done = scanner.feed(data)
    if b"\x10\x11" not in data:
        assert not done
        assert passed + scanner._held == data
    else:
        assert done and passed == data[: data.index(b"\x10\x11")]
