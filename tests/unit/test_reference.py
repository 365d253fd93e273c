"""Image reference parsing must agree with Docker (distribution/reference, go-digest).

The expected values below are what Docker's ParseNormalizedNamed + TagNameOnly and
FamiliarString produce for the same input, unless a case says otherwise.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from kapal import reference
from kapal.errors import InvalidArgument
from kapal.reference import Reference, is_full_image_id, parse, parse_repository, valid_tag

D64 = "0123456789abcdef" * 4
D96 = "0123456789abcdef" * 6
D128 = "0123456789abcdef" * 8
SHA = f"sha256:{D64}"

HUB = "docker.io"

# input, str(), familiar(), domain, path, tag, digest
VALID: list[tuple[str, str, str, str, str, str | None, str | None]] = [
    # Docker Hub official images, every way of spelling them.
    ("busybox", "docker.io/library/busybox:latest", "busybox:latest", HUB, "library/busybox", "latest", None),
    ("busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36", HUB, "library/busybox", "1.36", None),
    (
        "library/busybox",
        "docker.io/library/busybox:latest",
        "busybox:latest",
        HUB,
        "library/busybox",
        "latest",
        None,
    ),
    (
        "docker.io/busybox",
        "docker.io/library/busybox:latest",
        "busybox:latest",
        HUB,
        "library/busybox",
        "latest",
        None,
    ),
    (
        "docker.io/library/busybox",
        "docker.io/library/busybox:latest",
        "busybox:latest",
        HUB,
        "library/busybox",
        "latest",
        None,
    ),
    (
        "index.docker.io/library/busybox",
        "docker.io/library/busybox:latest",
        "busybox:latest",
        HUB,
        "library/busybox",
        "latest",
        None,
    ),
    (
        "index.docker.io/busybox:1",
        "docker.io/library/busybox:1",
        "busybox:1",
        HUB,
        "library/busybox",
        "1",
        None,
    ),
    ("a:1", "docker.io/library/a:1", "a:1", HUB, "library/a", "1", None),
    ("0", "docker.io/library/0:latest", "0:latest", HUB, "library/0", "latest", None),
    # Hub user repositories and nested paths.
    ("user/app", "docker.io/user/app:latest", "user/app:latest", HUB, "user/app", "latest", None),
    ("docker.io/user/app:v1", "docker.io/user/app:v1", "user/app:v1", HUB, "user/app", "v1", None),
    ("0/1", "docker.io/0/1:latest", "0/1:latest", HUB, "0/1", "latest", None),
    ("a/b/c/d/e", "docker.io/a/b/c/d/e:latest", "a/b/c/d/e:latest", HUB, "a/b/c/d/e", "latest", None),
    (
        "docker.io/library/a/b",
        "docker.io/library/a/b:latest",
        "library/a/b:latest",
        HUB,
        "library/a/b",
        "latest",
        None,
    ),
    # Separators: ".", "_", "__", runs of "-".
    ("a__b", "docker.io/library/a__b:latest", "a__b:latest", HUB, "library/a__b", "latest", None),
    ("a_b.c-d", "docker.io/library/a_b.c-d:latest", "a_b.c-d:latest", HUB, "library/a_b.c-d", "latest", None),
    (
        "user/a.b-c__d",
        "docker.io/user/a.b-c__d:latest",
        "user/a.b-c__d:latest",
        HUB,
        "user/a.b-c__d",
        "latest",
        None,
    ),
    (
        "user/a--b---c",
        "docker.io/user/a--b---c:latest",
        "user/a--b---c:latest",
        HUB,
        "user/a--b---c",
        "latest",
        None,
    ),
    # A single component is always a Hub name, even when it looks like a host.
    (
        "localhost",
        "docker.io/library/localhost:latest",
        "localhost:latest",
        HUB,
        "library/localhost",
        "latest",
        None,
    ),
    (
        "example.com",
        "docker.io/library/example.com:latest",
        "example.com:latest",
        HUB,
        "library/example.com",
        "latest",
        None,
    ),
    (
        "localhost:5000",
        "docker.io/library/localhost:5000",
        "localhost:5000",
        HUB,
        "library/localhost",
        "5000",
        None,
    ),
    # localhost and hosts with "." or ":" are registries.
    ("localhost/app", "localhost/app:latest", "localhost/app:latest", "localhost", "app", "latest", None),
    (
        "localhost:5000/app:tag",
        "localhost:5000/app:tag",
        "localhost:5000/app:tag",
        "localhost:5000",
        "app",
        "tag",
        None,
    ),
    (
        "127.0.0.1:5000/ns/app",
        "127.0.0.1:5000/ns/app:latest",
        "127.0.0.1:5000/ns/app:latest",
        "127.0.0.1:5000",
        "ns/app",
        "latest",
        None,
    ),
    ("1.2.3.4/app", "1.2.3.4/app:latest", "1.2.3.4/app:latest", "1.2.3.4", "app", "latest", None),
    ("[::1]:5000/app", "[::1]:5000/app:latest", "[::1]:5000/app:latest", "[::1]:5000", "app", "latest", None),
    ("[::1]/app", "[::1]/app:latest", "[::1]/app:latest", "[::1]", "app", "latest", None),
    (
        "[2001:DB8::1]:443/ns/app:v2",
        "[2001:DB8::1]:443/ns/app:v2",
        "[2001:DB8::1]:443/ns/app:v2",
        "[2001:DB8::1]:443",
        "ns/app",
        "v2",
        None,
    ),
    (
        "example.com/app",
        "example.com/app:latest",
        "example.com/app:latest",
        "example.com",
        "app",
        "latest",
        None,
    ),
    # Docker keeps the domain's case; only the path must be lowercase.
    (
        "Example.com/app",
        "Example.com/app:latest",
        "Example.com/app:latest",
        "Example.com",
        "app",
        "latest",
        None,
    ),
    # An uppercase first component cannot be a Hub namespace, so Docker takes it for a host.
    ("Foo/bar", "Foo/bar:latest", "Foo/bar:latest", "Foo", "bar", "latest", None),
    (
        "example.com:443/a/b/c:1",
        "example.com:443/a/b/c:1",
        "example.com:443/a/b/c:1",
        "example.com:443",
        "a/b/c",
        "1",
        None,
    ),
    (
        "xn--bcher-kva.example/app",
        "xn--bcher-kva.example/app:latest",
        "xn--bcher-kva.example/app:latest",
        "xn--bcher-kva.example",
        "app",
        "latest",
        None,
    ),
    # Only index.docker.io is an alias of docker.io.
    (
        "registry-1.docker.io/library/busybox",
        "registry-1.docker.io/library/busybox:latest",
        "registry-1.docker.io/library/busybox:latest",
        "registry-1.docker.io",
        "library/busybox",
        "latest",
        None,
    ),
    # Digests; a digest suppresses the default tag; tag and digest may both be given.
    (
        "quay.io/org/app@" + SHA,
        "quay.io/org/app@" + SHA,
        "quay.io/org/app@" + SHA,
        "quay.io",
        "org/app",
        None,
        SHA,
    ),
    (
        "busybox@" + SHA,
        "docker.io/library/busybox@" + SHA,
        "busybox@" + SHA,
        HUB,
        "library/busybox",
        None,
        SHA,
    ),
    (
        "busybox:1.36@" + SHA,
        "docker.io/library/busybox:1.36@" + SHA,
        "busybox:1.36@" + SHA,
        HUB,
        "library/busybox",
        "1.36",
        SHA,
    ),
    (
        "localhost:5000/app@" + SHA,
        "localhost:5000/app@" + SHA,
        "localhost:5000/app@" + SHA,
        "localhost:5000",
        "app",
        None,
        SHA,
    ),
    (
        "my-registry.local:5000/team/app:2024.01@" + SHA,
        "my-registry.local:5000/team/app:2024.01@" + SHA,
        "my-registry.local:5000/team/app:2024.01@" + SHA,
        "my-registry.local:5000",
        "team/app",
        "2024.01",
        SHA,
    ),
    (
        "app@sha512:" + D128,
        "docker.io/library/app@sha512:" + D128,
        "app@sha512:" + D128,
        HUB,
        "library/app",
        None,
        "sha512:" + D128,
    ),
    (
        "app@sha384:" + D96,
        "docker.io/library/app@sha384:" + D96,
        "app@sha384:" + D96,
        HUB,
        "library/app",
        None,
        "sha384:" + D96,
    ),
    # Tags: \w[\w.-]{0,127}, uppercase allowed.
    (
        "app:1.0.0-alpha.1",
        "docker.io/library/app:1.0.0-alpha.1",
        "app:1.0.0-alpha.1",
        HUB,
        "library/app",
        "1.0.0-alpha.1",
        None,
    ),
    ("app:_", "docker.io/library/app:_", "app:_", HUB, "library/app", "_", None),
    (
        "busybox:Latest_V1",
        "docker.io/library/busybox:Latest_V1",
        "busybox:Latest_V1",
        HUB,
        "library/busybox",
        "Latest_V1",
        None,
    ),
    (
        "app:" + "T" * 128,
        "docker.io/library/app:" + "T" * 128,
        "app:" + "T" * 128,
        HUB,
        "library/app",
        "T" * 128,
        None,
    ),
    # A 64-hex string is refused only on its own.
    (D64 + ":v1", f"docker.io/library/{D64}:v1", f"{D64}:v1", HUB, f"library/{D64}", "v1", None),
    ("user/" + D64, f"docker.io/user/{D64}:latest", f"user/{D64}:latest", HUB, f"user/{D64}", "latest", None),
    # Length limit is on the path after normalisation: 255 is fine.
    (
        "a" * 247,
        f"docker.io/library/{'a' * 247}:latest",
        f"{'a' * 247}:latest",
        HUB,
        "library/" + "a" * 247,
        "latest",
        None,
    ),
    (
        "user/" + "a" * 250,
        f"docker.io/user/{'a' * 250}:latest",
        f"user/{'a' * 250}:latest",
        HUB,
        "user/" + "a" * 250,
        "latest",
        None,
    ),
]

# input, substring of the error message
INVALID: list[tuple[str, str]] = [
    ("", "invalid reference format: empty reference"),
    ("Busybox", "invalid reference format: repository name (library/Busybox) must be lowercase"),
    ("UPPER", "repository name (library/UPPER) must be lowercase"),
    ("user/App", "repository name (user/App) must be lowercase"),
    ("docker.io/library/Busybox", "repository name (library/Busybox) must be lowercase"),
    ("example.com/App:tag", "repository name (App) must be lowercase"),
    ("App@" + SHA, "must be lowercase"),
    ("ÄPP", "must be lowercase"),
    ("app:", "invalid reference format"),
    (":tag", "invalid reference format"),
    ("app@", "invalid reference format"),
    ("app:tag@", "invalid reference format"),
    ("app:tag:tag", "invalid reference format"),
    ("app:ta/g", "invalid reference format"),
    ("app:-tag", "invalid reference format"),
    ("app:.tag", "invalid reference format"),
    ("app:" + "T" * 129, "invalid reference format"),
    ("app@sha256:short", "invalid reference format"),
    ("app@sha256:" + "a" * 31, "invalid reference format"),
    (f"app@{SHA}@{SHA}", "invalid reference format"),
    ("app@sha256:" + "a" * 63, "invalid checksum digest length"),
    ("app@sha512:" + D64, "invalid checksum digest length"),
    ("app@sha256:" + D64.upper(), "invalid checksum digest format"),
    # Docker's lowercase check runs on everything before the first ":" (so "app@SHA256" here).
    ("app@SHA256:" + D64, "repository name (library/app@SHA256) must be lowercase"),
    ("app:v1@SHA256:" + D64, "invalid checksum digest format"),
    ("app@md5:" + "a" * 32, "unsupported digest algorithm"),
    ("app/", "invalid reference format"),
    ("user/app/", "invalid reference format"),
    ("a//b", "invalid reference format"),
    ("docker.io/", "invalid reference format"),
    ("example.com:5000/", "invalid reference format"),
    ("-leading", "invalid reference format"),
    ("trailing-", "invalid reference format"),
    ("a___b", "invalid reference format"),
    ("a..b", "invalid reference format"),
    ("a._b", "invalid reference format"),
    ("café", "invalid reference format"),
    (D64, f"invalid repository name ({D64}), cannot specify 64-byte hexadecimal strings"),
    ("a" * 248, "repository name must not be more than 255 characters"),
    ("user/" + "a" * 251, "repository name must not be more than 255 characters"),
    (" busybox", "invalid reference format"),
    ("busybox ", "invalid reference format"),
    ("busy box", "invalid reference format"),
    ("busybox\n", "invalid reference format"),
    ("busybox:latest\n", "invalid reference format"),
    ("\tbusybox", "invalid reference format"),
    ("localhost:abc/app", "invalid reference format"),
    ("a:b/c", "invalid reference format"),
    ("http://example.com/app", "invalid reference format"),
    ("-example.com/app", "invalid reference format"),
    ("example-.com/app", "invalid reference format"),
    ("[::1%eth0]/app", "invalid reference format"),
    # Not a host name (underscore); Docker would accept it with an empty domain.
    ("a.b-c__d/e", "invalid reference format"),
]


def _id(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")


@pytest.mark.parametrize(
    ("text", "normal", "familiar", "domain", "path", "tag", "digest"),
    [pytest.param(*case, id=_id(case[0])) for case in VALID],
)
def test_parse_valid(
    text: str, normal: str, familiar: str, domain: str, path: str, tag: str | None, digest: str | None
) -> None:
    ref = parse(text)
    assert (ref.domain, ref.path, ref.tag, ref.digest) == (domain, path, tag, digest)
    assert str(ref) == normal
    assert ref.familiar() == familiar
    assert ref.repository == f"{domain}/{path}"
    assert parse(normal) == ref
    assert parse(familiar) == ref


def test_enough_cases() -> None:
    assert len(VALID) >= 40
    assert len(INVALID) >= 20


@pytest.mark.parametrize(("text", "message"), [pytest.param(*case, id=_id(case[0])) for case in INVALID])
def test_parse_invalid(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse(text)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value).replace(text, "")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("app:", "invalid reference format"),
        ("Busybox", "invalid reference format: repository name (library/Busybox) must be lowercase"),
        ("a" * 248, "repository name must not be more than 255 characters"),
        (D64, f"invalid repository name ({D64}), cannot specify 64-byte hexadecimal strings"),
        ("app@sha256:" + "a" * 63, "invalid checksum digest length"),
        ("app@md5:" + "a" * 32, "unsupported digest algorithm"),
    ],
)
def test_exact_docker_messages(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse(text)
    assert str(caught.value) == message


def test_invalid_argument_is_http_400() -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse("Busybox")
    assert caught.value.http_status == 400


# --- default tag ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tag"),
    [("busybox", None), ("busybox:1", "1"), ("busybox@" + SHA, None), ("busybox:1@" + SHA, "1")],
)
def test_without_default_tag_the_tag_given_is_kept(text: str, tag: str | None) -> None:
    ref = parse(text, default_tag=False)
    assert ref.tag == tag
    assert parse(str(ref), default_tag=False) == ref


def test_name_only_without_default_tag() -> None:
    ref = parse("busybox", default_tag=False)
    assert str(ref) == "docker.io/library/busybox"
    assert ref.familiar() == "busybox"
    assert ref.with_default_tag() == parse("busybox")
    digested = parse("busybox@" + SHA, default_tag=False)
    assert digested.with_default_tag() is digested


# --- properties and derived references -----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "repository", "familiar_repository"),
    [
        ("busybox:1", "docker.io/library/busybox", "busybox"),
        ("user/app", "docker.io/user/app", "user/app"),
        ("docker.io/library/a/b", "docker.io/library/a/b", "library/a/b"),
        ("localhost:5000/app@" + SHA, "localhost:5000/app", "localhost:5000/app"),
        ("quay.io/org/app", "quay.io/org/app", "quay.io/org/app"),
    ],
)
def test_repository_names(text: str, repository: str, familiar_repository: str) -> None:
    ref = parse(text)
    assert ref.repository == repository
    assert ref.familiar_repository == familiar_repository


@pytest.mark.parametrize("text", ["docker.io/localhost/app", "docker.io/foo.com/app", "docker.io/a.b-c__d/e"])
def test_familiar_keeps_hub_domain_when_dropping_it_changes_meaning(text: str) -> None:
    # Deliberate difference: Docker's FamiliarName would print "localhost/app", which names
    # another registry. Such Hub namespaces cannot exist, but round trips must hold.
    ref = parse(text)
    assert ref.domain == "docker.io"
    assert ref.familiar_repository == text
    assert parse(ref.familiar()) == ref


def test_reference_is_frozen_and_hashable() -> None:
    ref = parse("busybox")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ref.tag = "x"  # type: ignore[misc]
    assert {ref, parse("docker.io/library/busybox:latest")} == {ref}
    assert ref == Reference(domain="docker.io", path="library/busybox", tag="latest", digest=None)


def test_with_tag_keeps_digest() -> None:
    ref = parse("busybox@" + SHA).with_tag("1.36")
    assert str(ref) == "docker.io/library/busybox:1.36@" + SHA
    assert str(parse("busybox:1").with_tag("2")) == "docker.io/library/busybox:2"


@pytest.mark.parametrize("tag", ["", "-x", ".x", "a/b", "a:b", "T" * 129, "ä", "x\n"])
def test_with_tag_rejects_invalid(tag: str) -> None:
    with pytest.raises(InvalidArgument, match="^invalid tag format$"):
        parse("busybox").with_tag(tag)


def test_with_digest_keeps_tag() -> None:
    ref = parse("busybox:1").with_digest(SHA)
    assert str(ref) == "docker.io/library/busybox:1@" + SHA
    assert ref.familiar() == "busybox:1@" + SHA


@pytest.mark.parametrize(
    ("digest", "message"),
    [
        ("sha256:short", "invalid digest format"),
        (D64, "invalid digest format"),
        ("sha256:" + D64 + "\n", "invalid digest format"),
        ("sha256:" + "a" * 40, "invalid checksum digest length"),
        ("sha256:" + D64.upper(), "invalid checksum digest format"),
        ("md5:" + "a" * 32, "unsupported digest algorithm"),
    ],
)
def test_with_digest_rejects_invalid(digest: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=f"^{message}$"):
        parse("busybox").with_digest(digest)


# --- parse_repository, valid_tag, is_full_image_id -----------------------------------------


@pytest.mark.parametrize(
    ("text", "repository"),
    [
        ("busybox", "docker.io/library/busybox"),
        ("docker.io/busybox", "docker.io/library/busybox"),
        ("index.docker.io/user/app", "docker.io/user/app"),
        ("localhost:5000/app", "localhost:5000/app"),
        ("[::1]:5000/ns/app", "[::1]:5000/ns/app"),
    ],
)
def test_parse_repository(text: str, repository: str) -> None:
    assert parse_repository(text) == repository


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("busybox:1", "must not include a tag or digest"),
        ("busybox@" + SHA, "must not include a tag or digest"),
        ("localhost:5000", "must not include a tag or digest"),
        ("Busybox", "must be lowercase"),
        ("", "invalid reference format"),
        (D64, "cannot specify 64-byte hexadecimal strings"),
    ],
)
def test_parse_repository_rejects(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message.replace("(", r"\(")):
        parse_repository(text)


@pytest.mark.parametrize(
    ("tag", "ok"),
    [
        ("latest", True),
        ("1.36", True),
        ("A", True),
        ("_", True),
        ("v1.0-rc.1_x", True),
        ("a" * 128, True),
        ("", False),
        ("-a", False),
        (".a", False),
        ("a" * 129, False),
        ("a/b", False),
        ("a:b", False),
        ("a@b", False),
        ("ä", False),
        ("a\n", False),
        (" a", False),
    ],
)
def test_valid_tag(tag: str, ok: bool) -> None:
    assert valid_tag(tag) is ok


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        (D64, True),
        ("sha256:" + D64, False),
        (D64.upper(), False),
        (D64[:-1], False),
        (D64 + "0", False),
        (D64 + "\n", False),
        ("", False),
    ],
)
def test_is_full_image_id(text: str, ok: bool) -> None:
    assert is_full_image_id(text) is ok


def test_module_imports_only_cheap_modules() -> None:
    source = reference.__file__
    with open(source, encoding="utf-8") as handle:
        imports = {
            line.split()[1]
            for line in handle
            if line.startswith(("import ", "from ")) and "__future__" not in line
        }
    assert imports <= {"re", "dataclasses", "kapal.errors"}


# --- properties ----------------------------------------------------------------------------

_component = st.from_regex(r"[a-z0-9]{1,6}(?:(?:[._]|__|-{1,3})[a-z0-9]{1,6}){0,2}", fullmatch=True)
_domain = st.one_of(
    st.sampled_from(
        ["", "docker.io/", "index.docker.io/", "localhost/", "localhost:5000/", "[::1]:5000/", "Foo/"]
    ),
    st.from_regex(
        r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,5}[a-zA-Z0-9])?\.[a-z]{2,4}(?::[0-9]{1,5})?/", fullmatch=True
    ),
)
_tag = st.one_of(st.just(""), st.from_regex(r":[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True))
_digest = st.one_of(
    st.just(""),
    st.builds(lambda hexes: "@sha256:" + hexes, st.text("0123456789abcdef", min_size=64, max_size=64)),
    st.builds(lambda hexes: "@sha512:" + hexes, st.text("0123456789abcdef", min_size=128, max_size=128)),
)


@st.composite
def reference_texts(draw: st.DrawFn) -> str:
    components = draw(st.lists(_component, min_size=1, max_size=4))
    return draw(_domain) + "/".join(components) + draw(_tag) + draw(_digest)


def _parse_or_none(text: str, default_tag: bool = True) -> Reference | None:
    try:
        return parse(text, default_tag=default_tag)
    except InvalidArgument:
        return None


@given(reference_texts(), st.booleans())
def test_round_trip(text: str, default_tag: bool) -> None:
    ref = _parse_or_none(text, default_tag)
    assume(ref is not None)
    assert ref is not None
    assert parse(str(ref), default_tag=default_tag) == ref
    assert parse(ref.familiar(), default_tag=default_tag) == ref
    assert parse(ref.repository, default_tag=False).repository == ref.repository
    assert parse_repository(ref.familiar_repository) == ref.repository


@given(st.text())
def test_arbitrary_text_raises_only_invalid_argument(text: str) -> None:
    ref = _parse_or_none(text)
    if ref is not None:
        assert parse(str(ref)) == ref
        assert parse(ref.familiar()) == ref


@given(st.text(alphabet="aA0:/@._-[]Zsh256bcdef ", max_size=80))
def test_reference_like_text_raises_only_invalid_argument(text: str) -> None:
    ref = _parse_or_none(text)
    if ref is not None:
        assert parse(str(ref)) == ref
        assert parse(ref.familiar()) == ref
