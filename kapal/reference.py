"""Image references, parsed and normalised the way Docker does it.

Every name a user types (``busybox``, ``user/app:v1``, ``localhost:5000/app@sha256:…``)
and every ``repo``/``tag`` query parameter of the Engine API goes through this module.
Docker clients, compose files and scripts depend on the exact grammar and on the exact
normal form (``docker.io/library/busybox:latest``) and familiar form (``busybox:latest``)
that Docker produces, and on its error wording, so this follows the grammar of
github.com/distribution/reference (``ParseNormalizedNamed``, ``TagNameOnly``,
``FamiliarName``/``FamiliarString``, ``WithTag``/``WithDigest``) and the digest checks of
github.com/opencontainers/go-digest v1.0.0 rather than inventing a friendlier one.

Deliberate differences from Docker, both about names Docker itself cannot use:

* A first component that contains a ``.`` or ``:`` (so is taken for a registry) but is not
  a valid host name, such as ``a_b.com/app``, is rejected here.  Docker silently accepts it
  as a reference with an *empty* domain, which later fails in surprising places.
* The familiar form keeps ``docker.io/`` when dropping it would change the meaning,
  e.g. ``docker.io/foo.com/app`` (Docker prints ``foo.com/app``, a different registry).

The module is on the CLI start-up path: it imports only :mod:`re`, :mod:`dataclasses`
and :mod:`kapal.errors`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from kapal.errors import InvalidArgument

__all__ = [
    "DEFAULT_DOMAIN",
    "DEFAULT_TAG",
    "NAME_TOTAL_LENGTH_MAX",
    "Reference",
    "is_full_image_id",
    "parse",
    "parse_repository",
    "valid_tag",
]

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_REPO_PREFIX = "library/"
DEFAULT_TAG = "latest"
LOCALHOST = "localhost"
# Docker limits the path (after normalisation, so including "library/"), not the domain.
NAME_TOTAL_LENGTH_MAX = 255

# --- Grammar (the productions of distribution/reference, composed here) ---------------------
# Path components are lowercase alphanumeric runs joined by ".", "_", "__" or a run of "-".
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REMOTE_NAME = rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
# Domain components may be uppercase; the domain may be an IPv6 address in brackets.
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_IPV6_ADDRESS = r"\[[a-fA-F0-9:]+\]"
_DOMAIN_AND_PORT = rf"(?:{_DOMAIN_NAME}|{_IPV6_ADDRESS})(?::[0-9]+)?"
_TAG = r"\w[\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

# Go's regexp is ASCII-only for \w and anchors at the very end; re.ASCII plus fullmatch()
# gives the same (a plain "$" would also accept a trailing newline).
_DOMAIN_RE = re.compile(_DOMAIN_AND_PORT, re.ASCII)
_REMAINDER_RE = re.compile(
    rf"(?P<path>{_REMOTE_NAME})(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?", re.ASCII
)
_TAG_RE = re.compile(_TAG, re.ASCII)
_DIGEST_RE = re.compile(_DIGEST, re.ASCII)
_IDENTIFIER_RE = re.compile(r"[a-f0-9]{64}", re.ASCII)
_LOWER_HEX_RE = re.compile(r"[a-f0-9]+", re.ASCII)

# Digest algorithms Docker verifies (go-digest with crypto/sha256 and crypto/sha512
# registered) and the length of their hex encoding.
_DIGEST_HEX_LENGTH = {"sha256": 64, "sha384": 96, "sha512": 128}

_INVALID_FORMAT = "invalid reference format"


@dataclass(frozen=True)
class Reference:
    """A normalised image reference: ``domain/path[:tag][@digest]``.

    ``tag`` is ``None`` when the text named none and :func:`parse` was asked not to
    default it; both ``tag`` and ``digest`` may be set (``repo:tag@sha256:…``).
    """

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def repository(self) -> str:
        """The fully qualified repository: ``docker.io/library/busybox``."""
        return f"{self.domain}/{self.path}"

    @property
    def familiar_repository(self) -> str:
        """The repository as Docker shows it (FamiliarName): ``busybox``, ``user/app``."""
        if self.domain != DEFAULT_DOMAIN:
            return f"{self.domain}/{self.path}"
        if self.path.startswith(OFFICIAL_REPO_PREFIX):
            short = self.path[len(OFFICIAL_REPO_PREFIX) :]
            if "/" not in short:
                return short
        if _is_domain_like(self.path.split("/", 1)[0]):
            # Without the domain this would parse as another registry; keep it.
            return f"{self.domain}/{self.path}"
        return self.path

    def __str__(self) -> str:
        return self.repository + self._suffix()

    def familiar(self) -> str:
        """The reference as Docker shows it (FamiliarString): ``busybox:latest``."""
        return self.familiar_repository + self._suffix()

    def with_tag(self, tag: str) -> Reference:
        """This reference with *tag* (any digest is kept, as Docker's WithTag does)."""
        if not valid_tag(tag):
            raise InvalidArgument("invalid tag format")
        return replace(self, tag=tag)

    def with_digest(self, digest: str) -> Reference:
        """This reference with *digest* (any tag is kept, as Docker's WithDigest does)."""
        if not _DIGEST_RE.fullmatch(digest):
            raise InvalidArgument("invalid digest format")
        _check_digest(digest)
        return replace(self, digest=digest)

    def with_default_tag(self) -> Reference:
        """Add tag ``latest`` if there is neither tag nor digest (Docker's TagNameOnly)."""
        if self.tag is None and self.digest is None:
            return replace(self, tag=DEFAULT_TAG)
        return self

    def _suffix(self) -> str:
        suffix = ""
        if self.tag is not None:
            suffix += ":" + self.tag
        if self.digest is not None:
            suffix += "@" + self.digest
        return suffix


def parse(text: str, default_tag: bool = True) -> Reference:
    """Parse *text* as Docker's ``ParseNormalizedNamed`` does.

    With *default_tag* (Docker's ``TagNameOnly``) a reference with neither tag nor digest
    gets tag ``latest``; without it, ``tag`` stays ``None`` so callers can tell whether a
    tag was given. Raises :class:`InvalidArgument` with Docker's wording.
    """
    if not text:
        raise InvalidArgument(f"{_INVALID_FORMAT}: empty reference")
    if _IDENTIFIER_RE.fullmatch(text):
        raise InvalidArgument(f"invalid repository name ({text}), cannot specify 64-byte hexadecimal strings")
    domain, remainder = _split_docker_domain(text)
    remote = remainder.partition(":")[0]
    if remote.lower() != remote:
        raise InvalidArgument(f"{_INVALID_FORMAT}: repository name ({remote}) must be lowercase")

    match = _match(domain, remainder)
    if match is None:
        if _match(domain.lower(), remainder.lower()) is not None:
            raise InvalidArgument(f"{_INVALID_FORMAT}: repository name must be lowercase")
        raise InvalidArgument(_INVALID_FORMAT)

    path = match["path"]
    if len(path) > NAME_TOTAL_LENGTH_MAX:
        raise InvalidArgument(f"repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters")
    tag: str | None = match["tag"]
    digest: str | None = match["digest"]
    if digest is not None:
        _check_digest(digest)
    if default_tag and tag is None and digest is None:
        tag = DEFAULT_TAG
    return Reference(domain=domain, path=path, tag=tag, digest=digest)


def parse_repository(text: str) -> str:
    """Parse a repository name alone (``docker tag`` target, ``repo`` query parameter).

    Returns the normalised repository (``docker.io/library/busybox``); a tag or digest
    in *text* is an error.
    """
    ref = parse(text, default_tag=False)
    if ref.tag is not None or ref.digest is not None:
        raise InvalidArgument(f"{_INVALID_FORMAT}: repository name ({text}) must not include a tag or digest")
    return ref.repository


def valid_tag(tag: str) -> bool:
    """Whether *tag* is a valid tag: ``[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}``."""
    return _TAG_RE.fullmatch(tag) is not None


def is_full_image_id(text: str) -> bool:
    """Whether *text* is a full image ID (64 lowercase hex digits, no ``sha256:``).

    Docker refuses such strings as repository names so they can never be confused.
    """
    return _IDENTIFIER_RE.fullmatch(text) is not None


def _split_docker_domain(name: str) -> tuple[str, str]:
    """Split *name* into (domain, rest), normalising Docker Hub names (splitDockerDomain)."""
    first, slash, rest = name.partition("/")
    if not slash:
        # A single component is always a Hub official image, even "localhost:5000"
        # (which is repository "localhost" with tag "5000", as in Docker).
        return DEFAULT_DOMAIN, OFFICIAL_REPO_PREFIX + name
    if first == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    elif _is_domain_like(first):
        domain = first
    else:
        domain, rest = DEFAULT_DOMAIN, name
    if domain == DEFAULT_DOMAIN and "/" not in rest:
        rest = OFFICIAL_REPO_PREFIX + rest
    return domain, rest


def _is_domain_like(component: str) -> bool:
    """Docker's test for "this first component is a registry, not a Hub namespace".

    Namespaces are lowercase, so an uppercase first component is taken for a domain too.
    """
    return component == LOCALHOST or "." in component or ":" in component or component.lower() != component


def _match(domain: str, remainder: str) -> re.Match[str] | None:
    if _DOMAIN_RE.fullmatch(domain) is None:
        return None
    return _REMAINDER_RE.fullmatch(remainder)


def _check_digest(digest: str) -> None:
    """Validate a digest already shaped like ``algorithm:hex`` as go-digest v1.0.0 does."""
    algorithm, _, encoded = digest.partition(":")
    length = _DIGEST_HEX_LENGTH.get(algorithm)
    if length is None:
        # go-digest's own grammar wants a lowercase algorithm; past that, it is unknown.
        if algorithm.lower() != algorithm:
            raise InvalidArgument("invalid checksum digest format")
        raise InvalidArgument("unsupported digest algorithm")
    if len(encoded) != length:
        raise InvalidArgument("invalid checksum digest length")
    if _LOWER_HEX_RE.fullmatch(encoded) is None:
        raise InvalidArgument("invalid checksum digest format")
