"""The registry's parsing rules on their own: names, Content-Range, manifests, policy."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kapal.registry import manifests
from kapal.registry.app import _content_range
from kapal.registry.auth import Policy, Rule, parse_scope
from kapal.registry.errors import RegistryError
from kapal.registry.storage import NAME_RE, TAG_RE, check_name


@pytest.mark.parametrize("name", ["a", "library/busybox", "a-b/c__d/e.f", "x0/y--z", "a" * 255])
def test_valid_names(name):
    assert check_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "A", "a/", "/a", "a//b", "a..b", "-a", "a_", "a" * 256, "a/_layers", "a b"]
)
def test_invalid_names(name):
    with pytest.raises(RegistryError) as caught:
        check_name(name)
    assert caught.value.code == "NAME_INVALID"


@given(st.text(alphabet="abc./_-", max_size=12))
def test_name_components_never_escape_the_repository_directory(text):
    if NAME_RE.fullmatch(text):
        assert ".." not in text and not text.startswith(("/", ".", "_"))
        assert all(part and part[0].isalnum() for part in text.split("/"))


@given(st.text(max_size=130))
def test_tags_are_single_path_components(text):
    if TAG_RE.fullmatch(text):
        assert "/" not in text and text not in (".", "..") and len(text) <= 128


@pytest.mark.parametrize(
    ("header", "expected"),
    [(None, (None, None)), ("0-99", (0, 100)), ("bytes=100-199", (100, 100)), ("5-5", (5, 1))],
)
def test_content_range(header, expected):
    assert _content_range(header) == expected


@pytest.mark.parametrize("header", ["99-0", "abc", "1-", "-5"])
def test_bad_content_range_is_416(header):
    with pytest.raises(RegistryError) as caught:
        _content_range(header)
    assert caught.value.http_status == 416


def test_manifest_references_skip_foreign_layers_and_find_subject():
    digest = "sha256:" + "a" * 64
    document = {
        "schemaVersion": 2,
        "config": {"mediaType": "application/vnd.example.config", "digest": digest, "size": 2},
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": "sha256:" + "b" * 64,
                "size": 1,
            },
            {
                "mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                "digest": "sha256:" + "c" * 64,
                "size": 1,
                "urls": ["https://example.com/layer"],
            },
        ],
        "subject": {"mediaType": manifests.OCI_MANIFEST, "digest": "sha256:" + "d" * 64, "size": 3},
    }
    parsed = manifests.parse(json.dumps(document).encode(), None)
    assert parsed.media_type == manifests.OCI_MANIFEST
    assert parsed.blobs == [digest, "sha256:" + "b" * 64]
    assert parsed.subject == "sha256:" + "d" * 64
    assert parsed.artifact_type == "application/vnd.example.config"


def test_policy_and_scopes():
    policy = Policy([Rule(["dev"], ["team/*"], ["pull", "push"]), Rule(["anonymous"], ["pub/*"], ["pull"])])
    assert policy.allowed("dev", "team/app") == {"pull", "push"}
    assert policy.allowed("dev", "other") == set()
    assert policy.allowed(None, "pub/x") == {"pull"}
    assert policy.allowed("dev", "pub/x") == {"pull"}  # what anyone may do, a signed-in user may do
    assert Policy(None).allowed("anyone", "x") == {"pull", "push", "delete"}
    assert Policy(None).allowed(None, "x") == set()
    assert parse_scope("repository:team/app:pull,push") == ("repository", "team/app", ["pull", "push"])
    assert parse_scope("registry:catalog:*") == ("registry", "catalog", ["*"])
    assert parse_scope("nonsense") is None
