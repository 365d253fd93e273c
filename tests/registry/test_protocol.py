"""The OCI Distribution Spec's endpoints and error cases, one by one, over real HTTP."""

from __future__ import annotations

import json
import os

import requests

from tests.registry.helpers import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    absolute,
    error_codes,
    image_manifest,
    push_blob,
    push_image,
    sha256,
)

API_HEADER = "Docker-Distribution-API-Version"


def test_base_endpoint(registry):
    response = requests.get(f"{registry.url}/v2/")
    assert response.status_code == 200
    assert response.headers[API_HEADER] == "registry/2.0"
    assert response.json() == {}


def test_monolithic_upload_and_blob_get_head(registry):
    data = os.urandom(100_000)
    digest = sha256(data)
    response = requests.post(f"{registry.url}/v2/a/b/blobs/uploads/", params={"digest": digest}, data=data)
    assert response.status_code == 201
    assert response.headers["Location"] == f"/v2/a/b/blobs/{digest}"
    assert response.headers["Docker-Content-Digest"] == digest

    got = requests.get(f"{registry.url}/v2/a/b/blobs/{digest}")
    assert got.status_code == 200
    assert got.content == data
    assert got.headers["Docker-Content-Digest"] == digest
    head = requests.head(f"{registry.url}/v2/a/b/blobs/{digest}")
    assert head.status_code == 200
    assert head.headers["Content-Length"] == str(len(data))
    assert head.content == b""
    # Stored once, but visible only in the repository it was pushed to.
    other = requests.get(f"{registry.url}/v2/a/c/blobs/{digest}")
    assert other.status_code == 404
    assert error_codes(other) == ["BLOB_UNKNOWN"]
    assert requests.head(f"{registry.url}/v2/a/c/blobs/{digest}").status_code == 404
    assert (registry.root / "blobs" / "sha256" / digest.split(":")[1]).read_bytes() == data


def test_blob_range_requests(registry):
    data = bytes(range(256)) * 40
    digest = push_blob(requests.Session(), registry.url, "r", data)
    part = requests.get(f"{registry.url}/v2/r/blobs/{digest}", headers={"Range": "bytes=100-299"})
    assert part.status_code == 206
    assert part.content == data[100:300]
    assert part.headers["Content-Range"] == f"bytes 100-299/{len(data)}"
    tail = requests.get(f"{registry.url}/v2/r/blobs/{digest}", headers={"Range": "bytes=10000-"})
    assert tail.status_code == 206
    assert tail.content == data[10000:]
    beyond = requests.get(f"{registry.url}/v2/r/blobs/{digest}", headers={"Range": "bytes=20000-20010"})
    assert beyond.status_code == 416


def test_monolithic_upload_with_wrong_digest_stores_nothing(registry):
    data = b"some bytes"
    wrong = sha256(b"other bytes")
    response = requests.post(f"{registry.url}/v2/r/blobs/uploads/", params={"digest": wrong}, data=data)
    assert response.status_code == 400
    assert error_codes(response) == ["DIGEST_INVALID"]
    assert requests.head(f"{registry.url}/v2/r/blobs/{wrong}").status_code == 404
    assert not (registry.root / "blobs" / "sha256" / wrong.split(":")[1]).exists()
    assert list((registry.root / "uploads").iterdir()) == []


def test_post_then_put_upload(registry):
    data = os.urandom(5000)
    digest = sha256(data)
    start = requests.post(f"{registry.url}/v2/r/blobs/uploads/")
    assert start.status_code == 202
    assert start.headers["Range"] == "0-0"
    assert start.headers["Docker-Upload-UUID"]
    location = absolute(registry.url, start.headers["Location"])
    done = requests.put(location, params={"digest": digest}, data=data)
    assert done.status_code == 201, done.text
    assert done.headers["Docker-Content-Digest"] == digest
    assert requests.get(f"{registry.url}/v2/r/blobs/{digest}").content == data


def test_chunked_upload_with_status_and_out_of_order_chunk(registry):
    data = os.urandom(300_000)
    digest = sha256(data)
    start = requests.post(f"{registry.url}/v2/r/blobs/uploads/")
    location = absolute(registry.url, start.headers["Location"])
    chunks = [data[:100_000], data[100_000:250_000], data[250_000:]]
    offset = 0
    for chunk in chunks[:2]:
        response = requests.patch(
            location,
            data=chunk,
            headers={
                "Content-Range": f"{offset}-{offset + len(chunk) - 1}",
                "Content-Type": "application/octet-stream",
            },
        )
        assert response.status_code == 202, response.text
        offset += len(chunk)
        assert response.headers["Range"] == f"0-{offset - 1}"
        location = absolute(registry.url, response.headers["Location"])
    status = requests.get(location)
    assert status.status_code == 204
    assert status.headers["Range"] == f"0-{offset - 1}"
    # A chunk that does not start where the upload ends is refused, and changes nothing.
    wrong = requests.patch(location, data=chunks[2], headers={"Content-Range": f"0-{len(chunks[2]) - 1}"})
    assert wrong.status_code == 416
    assert requests.get(location).headers["Range"] == f"0-{offset - 1}"
    # The last chunk may come with the closing PUT.
    done = requests.put(
        location,
        params={"digest": digest},
        data=chunks[2],
        headers={"Content-Range": f"{offset}-{len(data) - 1}"},
    )
    assert done.status_code == 201, done.text
    assert requests.get(f"{registry.url}/v2/r/blobs/{digest}").content == data
    # The session is gone once completed.
    assert error_codes(requests.get(location)) == ["BLOB_UPLOAD_UNKNOWN"]


def test_streamed_patch_then_empty_put(registry):
    data = os.urandom(70_000)
    digest = sha256(data)
    location = absolute(
        registry.url, requests.post(f"{registry.url}/v2/r/blobs/uploads/").headers["Location"]
    )
    response = requests.patch(location, data=iter([data[:30_000], data[30_000:]]))
    assert response.status_code == 202
    assert response.headers["Range"] == f"0-{len(data) - 1}"
    done = requests.put(location, params={"digest": digest})
    assert done.status_code == 201
    # Digest checked at the end: a wrong one is refused and the upload can still be finished.
    location2 = absolute(
        registry.url, requests.post(f"{registry.url}/v2/r/blobs/uploads/").headers["Location"]
    )
    requests.patch(location2, data=b"abc")
    bad = requests.put(location2, params={"digest": sha256(b"abd")})
    assert bad.status_code == 400
    assert error_codes(bad) == ["DIGEST_INVALID"]
    no_digest = requests.put(location2)
    assert no_digest.status_code == 400
    assert error_codes(no_digest) == ["DIGEST_INVALID"]
    assert requests.put(location2, params={"digest": sha256(b"abc")}).status_code == 201


def test_cancel_upload(registry):
    location = absolute(
        registry.url, requests.post(f"{registry.url}/v2/r/blobs/uploads/").headers["Location"]
    )
    requests.patch(location, data=b"partial")
    assert requests.delete(location).status_code == 204
    gone = requests.get(location)
    assert gone.status_code == 404
    assert error_codes(gone) == ["BLOB_UPLOAD_UNKNOWN"]
    assert error_codes(requests.patch(location, data=b"more")) == ["BLOB_UPLOAD_UNKNOWN"]


def test_upload_session_belongs_to_its_repository(registry):
    start = requests.post(f"{registry.url}/v2/r/blobs/uploads/")
    session = start.headers["Docker-Upload-UUID"]
    other = requests.get(f"{registry.url}/v2/s/blobs/uploads/{session}")
    assert other.status_code == 404
    assert error_codes(other) == ["BLOB_UPLOAD_UNKNOWN"]
    assert requests.get(f"{registry.url}/v2/r/blobs/uploads/not-a-uuid").status_code == 404


def test_upload_session_survives_restart(registry):
    data = os.urandom(50_000)
    location = absolute(
        registry.url, requests.post(f"{registry.url}/v2/r/blobs/uploads/").headers["Location"]
    )
    requests.patch(location, data=data[:20_000], headers={"Content-Range": "0-19999"})
    registry.stop()
    registry.start()
    assert requests.get(location).headers["Range"] == "0-19999"
    requests.patch(location, data=data[20_000:], headers={"Content-Range": f"20000-{len(data) - 1}"})
    assert requests.put(location, params={"digest": sha256(data)}).status_code == 201
    assert requests.get(f"{registry.url}/v2/r/blobs/{sha256(data)}").content == data


def test_cross_repository_mount(registry):
    session = requests.Session()
    digest = push_blob(session, registry.url, "source/repo", b"layer to share")
    mounted = session.post(
        f"{registry.url}/v2/target/blobs/uploads/", params={"mount": digest, "from": "source/repo"}
    )
    assert mounted.status_code == 201
    assert mounted.headers["Location"] == f"/v2/target/blobs/{digest}"
    assert mounted.headers["Docker-Content-Digest"] == digest
    assert session.get(f"{registry.url}/v2/target/blobs/{digest}").content == b"layer to share"
    # Not in the source: an ordinary upload session instead.
    missing = sha256(b"absent")
    fallback = session.post(
        f"{registry.url}/v2/target/blobs/uploads/", params={"mount": missing, "from": "source/repo"}
    )
    assert fallback.status_code == 202
    assert "/blobs/uploads/" in fallback.headers["Location"]


def test_manifest_put_get_head_by_tag_and_digest(registry):
    session = requests.Session()
    digest, manifest = push_image(session, registry.url, "app/web", "v1", [b"layer one", b"layer two"])
    for reference in ("v1", digest):
        got = session.get(
            f"{registry.url}/v2/app/web/manifests/{reference}", headers={"Accept": OCI_MANIFEST}
        )
        assert got.status_code == 200
        assert got.content == manifest
        assert got.headers["Content-Type"] == OCI_MANIFEST
        assert got.headers["Docker-Content-Digest"] == digest
        head = session.head(f"{registry.url}/v2/app/web/manifests/{reference}")
        assert head.status_code == 200
        assert head.headers["Content-Length"] == str(len(manifest))
        assert head.headers["Docker-Content-Digest"] == digest
    # A manifest is a blob too.
    assert session.get(f"{registry.url}/v2/app/web/blobs/{digest}").content == manifest
    unknown = session.get(f"{registry.url}/v2/app/web/manifests/v2")
    assert unknown.status_code == 404
    assert error_codes(unknown) == ["MANIFEST_UNKNOWN"]
    assert session.head(f"{registry.url}/v2/app/web/manifests/v2").status_code == 404
    no_repo = session.get(f"{registry.url}/v2/nothing/here/manifests/v1")
    assert no_repo.status_code == 404
    assert error_codes(no_repo) in (["NAME_UNKNOWN"], ["MANIFEST_UNKNOWN"])


def test_docker_schema2_and_manifest_list(registry):
    session = requests.Session()
    amd, amd_bytes = push_image(
        session, registry.url, "multi", "amd", [b"amd layer"], media_type=DOCKER_MANIFEST
    )
    arm, arm_bytes = push_image(
        session, registry.url, "multi", "arm", [b"arm layer"], media_type=DOCKER_MANIFEST
    )
    listing = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_LIST,
            "manifests": [
                {
                    "mediaType": DOCKER_MANIFEST,
                    "digest": amd,
                    "size": len(amd_bytes),
                    "platform": {"architecture": "amd64", "os": "linux"},
                },
                {
                    "mediaType": DOCKER_MANIFEST,
                    "digest": arm,
                    "size": len(arm_bytes),
                    "platform": {"architecture": "arm64", "os": "linux"},
                },
            ],
        }
    ).encode()
    put = session.put(
        f"{registry.url}/v2/multi/manifests/latest", data=listing, headers={"Content-Type": DOCKER_LIST}
    )
    assert put.status_code == 201, put.text
    got = session.get(f"{registry.url}/v2/multi/manifests/latest")
    assert got.headers["Content-Type"] == DOCKER_LIST
    assert got.content == listing
    assert session.get(f"{registry.url}/v2/multi/manifests/amd").headers["Content-Type"] == DOCKER_MANIFEST


def test_index_with_missing_child_is_refused(registry):
    session = requests.Session()
    child, child_bytes = push_image(session, registry.url, "idx", "child", [b"x"])
    ghost = sha256(b"ghost manifest")
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": child, "size": len(child_bytes)},
            {"mediaType": OCI_MANIFEST, "digest": ghost, "size": 10},
        ],
    }
    refused = session.put(
        f"{registry.url}/v2/idx/manifests/all", data=json.dumps(index), headers={"Content-Type": OCI_INDEX}
    )
    assert refused.status_code == 400
    assert error_codes(refused) == ["MANIFEST_BLOB_UNKNOWN"]
    index["manifests"] = index["manifests"][:1]
    accepted = session.put(
        f"{registry.url}/v2/idx/manifests/all", data=json.dumps(index), headers={"Content-Type": OCI_INDEX}
    )
    assert accepted.status_code == 201


def test_manifest_with_missing_blob_is_refused(registry):
    session = requests.Session()
    config = b"{}"
    push_blob(session, registry.url, "m", config)
    manifest = image_manifest(config, [b"never uploaded"])
    response = session.put(
        f"{registry.url}/v2/m/manifests/t", data=manifest, headers={"Content-Type": OCI_MANIFEST}
    )
    assert response.status_code == 400
    assert error_codes(response) == ["MANIFEST_BLOB_UNKNOWN"]
    assert response.json()["errors"][0]["detail"] == {"digest": sha256(b"never uploaded")}
    # A blob in another repository does not count.
    push_blob(session, registry.url, "elsewhere", b"never uploaded")
    again = session.put(
        f"{registry.url}/v2/m/manifests/t", data=manifest, headers={"Content-Type": OCI_MANIFEST}
    )
    assert error_codes(again) == ["MANIFEST_BLOB_UNKNOWN"]
    assert session.get(f"{registry.url}/v2/m/manifests/t").status_code == 404


def test_invalid_manifests(registry):
    session = requests.Session()
    url = f"{registry.url}/v2/m/manifests/t"
    cases = [
        (b"not json", OCI_MANIFEST),
        (b"[1, 2]", OCI_MANIFEST),
        (json.dumps({"schemaVersion": 1, "name": "m"}).encode(), OCI_MANIFEST),
        (
            json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {}, "layers": []}).encode(),
            OCI_MANIFEST,
        ),
        (json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}).encode(), OCI_MANIFEST),
        (json.dumps({"schemaVersion": 2, "mediaType": "text/plain"}).encode(), "text/plain"),
    ]
    for body, content_type in cases:
        response = session.put(url, data=body, headers={"Content-Type": content_type})
        assert response.status_code == 400, body
        assert error_codes(response) == ["MANIFEST_INVALID"], body


def test_oversized_manifest_is_refused(registry):
    huge = b'{"schemaVersion": 2, "pad": "' + b"x" * (4 << 20) + b'"}'
    response = requests.put(
        f"{registry.url}/v2/m/manifests/big", data=huge, headers={"Content-Type": OCI_MANIFEST}
    )
    assert response.status_code == 413
    assert error_codes(response) == ["SIZE_INVALID"]
    streamed = requests.put(
        f"{registry.url}/v2/m/manifests/big", data=iter([huge]), headers={"Content-Type": OCI_MANIFEST}
    )
    assert streamed.status_code == 413


def test_manifest_put_by_digest(registry):
    session = requests.Session()
    config = b'{"a": 1}'
    push_blob(session, registry.url, "d", config)
    manifest = image_manifest(config, [])
    digest = sha256(manifest)
    wrong = session.put(
        f"{registry.url}/v2/d/manifests/{sha256(b'x')}", data=manifest, headers={"Content-Type": OCI_MANIFEST}
    )
    assert wrong.status_code == 400
    assert error_codes(wrong) == ["DIGEST_INVALID"]
    right = session.put(
        f"{registry.url}/v2/d/manifests/{digest}", data=manifest, headers={"Content-Type": OCI_MANIFEST}
    )
    assert right.status_code == 201
    assert right.headers["Location"] == f"/v2/d/manifests/{digest}"
    assert session.get(f"{registry.url}/v2/d/tags/list").json()["tags"] == []
    # Several tags at once (?tag=, distribution-spec end-7b).
    tagged = session.put(
        f"{registry.url}/v2/d/manifests/{digest}",
        params=[("tag", "one"), ("tag", "two")],
        data=manifest,
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert tagged.status_code == 201
    assert session.get(f"{registry.url}/v2/d/tags/list").json()["tags"] == ["one", "two"]


def test_tag_list_pagination(registry):
    session = requests.Session()
    digest, manifest = push_image(session, registry.url, "paged", "t00", [])
    tags = [f"t{i:02d}" for i in range(12)]
    for tag in tags[1:]:
        session.put(
            f"{registry.url}/v2/paged/manifests/{tag}", data=manifest, headers={"Content-Type": OCI_MANIFEST}
        )
    everything = session.get(f"{registry.url}/v2/paged/tags/list")
    assert everything.json() == {"name": "paged", "tags": tags}
    assert "Link" not in everything.headers
    seen = []
    url = f"{registry.url}/v2/paged/tags/list?n=5"
    pages = 0
    while url:
        page = session.get(url)
        assert page.status_code == 200
        seen += page.json()["tags"]
        pages += 1
        link = page.headers.get("Link")
        url = absolute(registry.url, link.split(";")[0].strip("<>")) if link else None
    assert seen == tags
    assert pages == 3
    after = session.get(f"{registry.url}/v2/paged/tags/list", params={"n": 3, "last": "t05"})
    assert after.json()["tags"] == ["t06", "t07", "t08"]
    assert after.headers["Link"] == '</v2/paged/tags/list?n=3&last=t08>; rel="next"'
    bad = session.get(f"{registry.url}/v2/paged/tags/list", params={"n": "-1"})
    assert bad.status_code == 400
    unknown = session.get(f"{registry.url}/v2/nope/tags/list")
    assert unknown.status_code == 404
    assert error_codes(unknown) == ["NAME_UNKNOWN"]


def test_delete_manifest_tag_and_blob(registry):
    session = requests.Session()
    digest, manifest = push_image(session, registry.url, "del", "a", [b"del layer"])
    session.put(f"{registry.url}/v2/del/manifests/b", data=manifest, headers={"Content-Type": OCI_MANIFEST})
    # Deleting a tag keeps the manifest and other tags.
    assert session.delete(f"{registry.url}/v2/del/manifests/b").status_code == 202
    assert session.get(f"{registry.url}/v2/del/tags/list").json()["tags"] == ["a"]
    assert session.head(f"{registry.url}/v2/del/manifests/{digest}").status_code == 200
    # Deleting by digest removes the manifest and every tag on it.
    assert session.delete(f"{registry.url}/v2/del/manifests/{digest}").status_code == 202
    gone = session.get(f"{registry.url}/v2/del/manifests/{digest}")
    assert gone.status_code == 404
    assert error_codes(gone) == ["MANIFEST_UNKNOWN"]
    assert session.get(f"{registry.url}/v2/del/tags/list").json()["tags"] == []
    again = session.delete(f"{registry.url}/v2/del/manifests/{digest}")
    assert again.status_code == 404
    assert error_codes(again) == ["MANIFEST_UNKNOWN"]
    layer = sha256(b"del layer")
    assert session.delete(f"{registry.url}/v2/del/blobs/{layer}").status_code == 202
    assert error_codes(session.get(f"{registry.url}/v2/del/blobs/{layer}")) == ["BLOB_UNKNOWN"]
    assert error_codes(session.delete(f"{registry.url}/v2/del/blobs/{layer}")) == ["BLOB_UNKNOWN"]


def test_referrers(registry):
    session = requests.Session()
    subject_digest, subject_bytes = push_image(session, registry.url, "ref", "v1", [b"app"])
    subject = {"mediaType": OCI_MANIFEST, "digest": subject_digest, "size": len(subject_bytes)}
    signature = image_manifest(
        b"{}",
        [b"signature"],
        subject=subject,
        artifact_type="application/vnd.example.sig",
        annotations={"org.example": "yes"},
    )
    push_blob(session, registry.url, "ref", b"{}")
    push_blob(session, registry.url, "ref", b"signature")
    put = session.put(
        f"{registry.url}/v2/ref/manifests/{sha256(signature)}",
        data=signature,
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert put.status_code == 201
    assert put.headers["OCI-Subject"] == subject_digest
    sbom, _ = push_image(
        session,
        registry.url,
        "ref",
        "sbom",
        [b"sbom"],
        subject=subject,
        artifact_type="application/vnd.example.sbom",
    )
    listing = session.get(f"{registry.url}/v2/ref/referrers/{subject_digest}")
    assert listing.status_code == 200
    assert listing.headers["Content-Type"] == OCI_INDEX
    index = listing.json()
    assert index["schemaVersion"] == 2 and index["mediaType"] == OCI_INDEX
    by_digest = {item["digest"]: item for item in index["manifests"]}
    assert set(by_digest) == {sha256(signature), sbom}
    assert by_digest[sha256(signature)] == {
        "mediaType": OCI_MANIFEST,
        "digest": sha256(signature),
        "size": len(signature),
        "artifactType": "application/vnd.example.sig",
        "annotations": {"org.example": "yes"},
    }
    filtered = session.get(
        f"{registry.url}/v2/ref/referrers/{subject_digest}",
        params={"artifactType": "application/vnd.example.sbom"},
    )
    assert filtered.headers["OCI-Filters-Applied"] == "artifactType"
    assert [item["digest"] for item in filtered.json()["manifests"]] == [sbom]
    none = session.get(f"{registry.url}/v2/ref/referrers/{sha256(b'nothing refers to me')}")
    assert none.status_code == 200
    assert none.json()["manifests"] == []
    # Deleting a referrer takes it out of the index.
    session.delete(f"{registry.url}/v2/ref/manifests/{sbom}")
    after = session.get(f"{registry.url}/v2/ref/referrers/{subject_digest}").json()["manifests"]
    assert [item["digest"] for item in after] == [sha256(signature)]
    assert session.get(f"{registry.url}/v2/ref/referrers/sha256:nothex").status_code == 400


def test_catalog_with_pagination(registry):
    session = requests.Session()
    names = ["alpha", "beta/one", "beta/two", "gamma"]
    for name in names:
        push_image(session, registry.url, name, "t", [])
    assert session.get(f"{registry.url}/v2/_catalog").json() == {"repositories": names}
    first = session.get(f"{registry.url}/v2/_catalog", params={"n": 2})
    assert first.json() == {"repositories": names[:2]}
    assert first.headers["Link"] == '</v2/_catalog?n=2&last=beta/one>; rel="next"'
    second = session.get(f"{registry.url}/v2/_catalog", params={"n": 2, "last": "beta/one"})
    assert second.json() == {"repositories": names[2:]}


def test_invalid_names_and_digests(registry):
    bad_name = requests.get(f"{registry.url}/v2/Upper/Case/tags/list")
    assert bad_name.status_code == 400
    assert error_codes(bad_name) == ["NAME_INVALID"]
    assert error_codes(requests.post(f"{registry.url}/v2/a..b/blobs/uploads/")) == ["NAME_INVALID"]
    bad_digest = requests.get(f"{registry.url}/v2/ok/blobs/sha256:1234")
    assert bad_digest.status_code == 400
    assert error_codes(bad_digest) == ["DIGEST_INVALID"]
    bad_upload = requests.post(
        f"{registry.url}/v2/ok/blobs/uploads/", params={"digest": "md5:abc"}, data=b"x"
    )
    assert error_codes(bad_upload) == ["DIGEST_INVALID"]
    unsupported = requests.post(f"{registry.url}/v2/ok/tags/list")
    assert unsupported.status_code == 405
    assert error_codes(unsupported) == ["UNSUPPORTED"]
    for response in (bad_name, bad_digest, unsupported):
        assert response.headers[API_HEADER] == "registry/2.0"


def test_health_metrics_and_access_log(registry):
    session = requests.Session()
    push_blob(session, registry.url, "obs", b"observed")
    session.get(f"{registry.url}/v2/obs/blobs/{sha256(b'missing')}")
    assert session.get(f"{registry.url}/health").json() == {"status": "ok"}
    text = session.get(f"{registry.url}/metrics").text
    assert 'route="uploads",status="201"} 1' in text
    assert 'route="blob",status="404"} 1' in text
    assert "kapal_registry_request_duration_seconds_count" in text
    entries = [entry for entry in registry.logs() if entry.get("method")]
    uploads = [entry for entry in entries if entry["path"].startswith("/v2/obs/blobs/uploads/")]
    assert uploads and uploads[0]["status"] == 201 and uploads[0]["remote"] == "127.0.0.1"
    assert "duration_ms" in uploads[0]


def test_racing_requests_on_one_upload_session(registry):
    """Several PUTs closing the same session at once: one wins, the rest are refused, the blob is whole."""
    from concurrent.futures import ThreadPoolExecutor

    data = os.urandom(2 << 20)
    location = absolute(
        registry.url, requests.post(f"{registry.url}/v2/race/blobs/uploads/").headers["Location"]
    )
    assert requests.patch(location, data=data).status_code == 202
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: requests.put(location, params={"digest": sha256(data)}), range(8)))
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses.count(201) == 1
    assert set(statuses) <= {201, 404, 416}
    for answer in answers:
        if answer.status_code != 201:
            assert error_codes(answer)[0] in ("BLOB_UPLOAD_UNKNOWN", "BLOB_UPLOAD_INVALID")
    assert requests.get(f"{registry.url}/v2/race/blobs/{sha256(data)}").content == data
    late = requests.patch(location, data=b"more")
    assert error_codes(late) == ["BLOB_UPLOAD_UNKNOWN"]
