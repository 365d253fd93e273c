"""Detach keys: the key sequence (ctrl-p ctrl-q by default) that leaves a container's TTY running.

Docker's format: a comma-separated list where each item is a single character or
``ctrl-X`` with X one of a-z, @, [, \\, ], ^, _. The daemon watches a TTY's stdin for the
sequence (so any client can detach), and the kapal CLI watches too, to know that the
stream ended because the user detached, not because the container exited.

Imported by the CLI: the standard library only.
"""

from __future__ import annotations

DEFAULT = "ctrl-p,ctrl-q"
_CTRL = {"@": 0, "[": 27, "\\": 28, "]": 29, "^": 30, "_": 31}


class DetachKeysError(ValueError):
    """The sequence is not in Docker's format (the message says which part)."""


def parse(keys: str) -> bytes:
    """The bytes of a ``--detach-keys`` value; an empty value disables detaching."""
    out = bytearray()
    for item in keys.split(",") if keys else []:
        if len(item) == 1:
            out.append(ord(item))
            continue
        lowered = item.lower()
        if not lowered.startswith("ctrl-") or len(lowered) != 6:
            raise DetachKeysError(f"Invalid detach keys ({keys}) provided: unknown character: {item}")
        key = lowered[5]
        if "a" <= key <= "z":
            out.append(ord(key) - ord("a") + 1)
        elif key in _CTRL:
            out.append(_CTRL[key])
        else:
            raise DetachKeysError(f"Invalid detach keys ({keys}) provided: unknown character: {item}")
    return bytes(out)


class EscapeScanner:
    """Finds the sequence in a stream of reads. Bytes that might begin it are held back until
    they turn out not to (then they are passed on), as Docker's escape proxy does."""

    def __init__(self, sequence: bytes) -> None:
        self.sequence = sequence
        self._held = b""

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """(bytes to pass on, whether the sequence is now complete)."""
        if not self.sequence:
            return data, False
        out = bytearray()
        for byte in data:
            candidate = self._held + bytes([byte])
            if self.sequence.startswith(candidate):
                if candidate == self.sequence:
                    self._held = b""
                    return bytes(out), True
                self._held = candidate
                continue
            out += self._held
            self._held = b""
            if self.sequence.startswith(bytes([byte])):
                self._held = bytes([byte])
            else:
                out.append(byte)
        return bytes(out), False
