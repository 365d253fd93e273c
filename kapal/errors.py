"""Typed errors for every part of kapal.

Errors are classified by what the caller can do about them, not by where they
come from (the model of moby's errdefs). The HTTP status for each class is
decided here and nowhere else; the CLI prints the message the daemon sends.
"""

from __future__ import annotations


class KapalError(Exception):
    """Base of every error kapal reports to a user."""

    http_status = 500

    @property
    def message(self) -> str:
        return str(self)


class InvalidArgument(KapalError):
    """The request is malformed: a bad reference, flag, archive or layer."""

    http_status = 400


class Unauthorized(KapalError):
    http_status = 401


class Forbidden(KapalError):
    http_status = 403


class NotFound(KapalError):
    """The named object does not exist."""

    http_status = 404


class Conflict(KapalError):
    """The request clashes with the current state (in use, name taken)."""

    http_status = 409


class NotImplementedYet(KapalError):
    """A Docker feature kapal does not offer (yet); said plainly instead of faked."""

    http_status = 501


class Unavailable(KapalError):
    """A dependency is missing or down (a registry, a runtime, the disk)."""

    http_status = 503


class StorageError(KapalError):
    """The store could not be written (full disk, I/O error); nothing stored was changed."""

    http_status = 500


class DigestMismatch(InvalidArgument):
    """Content did not hash to the digest it claimed."""


def http_status(error: BaseException) -> int:
    """The HTTP status the Engine API answers with for *error*."""
    if isinstance(error, KapalError):
        return error.http_status
    return 500
