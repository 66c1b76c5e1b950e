"""File inputs and outputs of /v1: data URIs, uploads, this server's own file URLs, owner-only
access, upload limits, and no URL of anywhere else ever fetched."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

from mlservice.predictors.image_classifier import ImageClassifier
from tests.conftest import Service
from tests.fixtures.api import totals
from tests.fixtures.predictors import EchoText
from tests.replicate.conftest import create, data_uri
from tests.replicate.test_predictions import assert_problem

CAT_CLASS_IDS = range(281, 286)


async def upload(
    service: Service, headers: dict[str, str], data: bytes, name: str = "chelsea.jpg", **form: str
) -> Any:
    files = {"content": (name, data, "image/jpeg")}
    return await service.client.post("/v1/files", files=files, data=form, headers=headers)


def assert_cat(prediction: dict[str, Any]) -> None:
    assert prediction["status"] == "succeeded", prediction
    top = prediction["output"]["predictions"][0]
    assert top["class_id"] in CAT_CLASS_IDS, top
    assert "cat" in top["label"].lower()


async def test_image_as_data_uri(service: Service, chelsea_jpeg: bytes) -> None:
    headers = await service.user()
    r = await create(
        service, headers, "image-classification", {"image": data_uri(chelsea_jpeg), "top_k": 2}, prefer="wait"
    )
    assert r.status_code == 201, r.text
    p = r.json()
    assert_cat(p)
    assert len(p["output"]["predictions"]) == 2
    # The input is shown as the URL of the stored input, which its owner may run again.
    assert p["input"] == {"top_k": 2, "image": f"http://testserver/api/jobs/{p['id']}/input"}
    again = await create(
        service, headers, "image-classification", {"file": p["input"]["image"]}, prefer="wait"
    )
    assert_cat(again.json())


async def test_bad_data_uris(service_factory: Any, chelsea_jpeg: bytes) -> None:
    async with service_factory(predictors=[ImageClassifier], workers=0, max_upload_bytes=10_000) as service:
        headers = await service.user()
        for bad in ("data:image/jpeg;base64,not base64!", "data:image/jpeg;base64"):
            r = await create(service, headers, "image-classification", {"image": bad})
            assert_problem(r, 422, "invalid_data_uri")
        r = await create(service, headers, "image-classification", {"image": data_uri(chelsea_jpeg)})
        assert_problem(r, 413, "file_too_large")
        r = await create(service, headers, "image-classification", {"image": data_uri(b"not an image")})
        assert r.status_code in {415, 422}, r.text
        r = await create(service, headers, "image-classification", {})
        assert_problem(r, 422, "missing_input")
        r = await create(service, headers, "image-classification", {"image": 1})
        assert_problem(r, 422, "invalid_input")
        wallet = (await service.client.get("/api/wallet", headers=headers)).json()
        assert totals(wallet) == {"balance": 100, "held": 0, "available": 100}


async def test_uploaded_file_is_an_input_of_its_owner_only(service: Service, chelsea_jpeg: bytes) -> None:
    owner, other = await service.user(), await service.user()
    r = await upload(service, owner, chelsea_jpeg, metadata='{"purpose": "tests"}')
    assert r.status_code == 201, r.text
    file = r.json()
    assert file["name"] == "chelsea.jpg"
    assert file["content_type"] == "image/jpeg"
    assert file["size"] == len(chelsea_jpeg)
    assert file["metadata"] == {"purpose": "tests"}
    assert file["expires_at"] > file["created_at"]
    url = file["urls"]["get"]
    assert url == f"http://testserver/v1/files/{file['id']}"

    p = await create(service, owner, "image-classification", {"image": url}, prefer="wait")
    assert_cat(p.json())
    assert (await service.client.get(url, headers=owner)).json() == file
    assert [f["id"] for f in (await service.client.get("/v1/files", headers=owner)).json()["results"]] == [
        file["id"]
    ]
    download = await service.client.get(f"{url}/download", headers=owner)
    assert download.content == chelsea_jpeg
    assert download.headers["content-type"] == "application/octet-stream"
    assert download.headers["content-disposition"].startswith("attachment")

    # Somebody else: not found, whatever they try; their attempt to run on it costs nothing.
    for path in (url, f"{url}/download"):
        assert_problem(await service.client.get(path, headers=other), 404, "file_not_found")
    assert_problem(await service.client.delete(url, headers=other), 404, "file_not_found")
    assert (await service.client.get("/v1/files", headers=other)).json()["results"] == []
    r = await create(service, other, "image-classification", {"image": url})
    assert_problem(r, 422, "file_not_found")
    r = await create(service, other, "image-classification", {"image": p.json()["input"]["image"]})
    assert_problem(r, 422, "file_not_found")
    assert (await service.client.get("/api/wallet", headers=other)).json()["held"] == 0

    assert (await service.client.delete(url, headers=owner)).status_code == 204
    assert_problem(await service.client.get(url, headers=owner), 404, "file_not_found")
    r = await create(service, owner, "image-classification", {"image": url})
    assert_problem(r, 422, "file_not_found")


async def test_artifact_urls_are_their_owners(service: Service) -> None:
    owner, other = await service.user(), await service.user()
    p = (await create(service, owner, prefer="wait")).json()
    link = p["output"]["files"]["echo"]
    url = link.partition("?")[0]  # its path, without the link's token
    assert (await service.client.get(url, headers=owner)).content == b"hello"
    assert (await service.client.get(url, headers=other)).status_code == 404
    assert (await service.client.get(url)).status_code == 401
    # As a file input, a job's file is its owner's only, link or not.
    for named in (url, link):
        r = await create(service, other, "image-classification", {"image": named})
        assert_problem(r, 422, "file_not_found")


async def test_uploads_are_limited(service_factory: Any, chelsea_jpeg: bytes) -> None:
    async with service_factory(predictors=[EchoText], workers=0, max_upload_bytes=10_000) as service:
        headers = await service.user()
        assert_problem(await upload(service, headers, chelsea_jpeg), 413, "file_too_large")
        assert_problem(await upload(service, headers, b"x", metadata="[1]"), 422, "invalid_metadata")
        assert (await service.client.get("/v1/files", headers=headers)).json()["results"] == []


def multipart(*parts: tuple[str, str, bytes]) -> tuple[bytes, dict[str, str]]:
    """A multipart/form-data body written out byte by byte, so that each part is exactly the shape
    a client sends: (its Content-Disposition parameters, its Content-Type or "", its bytes)."""
    boundary = "mlservice-test-boundary"
    body = b""
    for disposition, content_type, data in parts:
        body += f"--{boundary}\r\nContent-Disposition: form-data; {disposition}\r\n".encode()
        if content_type:
            body += f"Content-Type: {content_type}\r\n".encode()
        body += b"\r\n" + data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


CONTENT = ('name="content"; filename="notes.txt"', "text/plain", b"some notes")
# What each client sends as `metadata`: Python's a text field holding JSON, JavaScript's a Blob of
# type application/json, which FormData sends with the file name "blob".
METADATA_SHAPES = {
    "text field": ('name="metadata"', "", b'{"purpose": "tests", "n": 1}'),
    "json field": ('name="metadata"', "application/json", b'{"purpose": "tests", "n": 1}'),
    "json blob": ('name="metadata"; filename="blob"', "application/json", b'{"purpose": "tests", "n": 1}'),
}


@pytest.mark.parametrize("shape", METADATA_SHAPES)
async def test_metadata_as_a_text_field_or_a_json_part(service: Service, shape: str) -> None:
    headers = await service.user()
    body, content_type = multipart(CONTENT, METADATA_SHAPES[shape])
    r = await service.client.post("/v1/files", content=body, headers=headers | content_type)
    assert r.status_code == 201, r.text
    file = r.json()
    assert file["metadata"] == {"purpose": "tests", "n": 1}
    assert (file["name"], file["content_type"], file["size"]) == ("notes.txt", "text/plain", 10)
    assert (await service.client.get(file["urls"]["get"], headers=headers)).json()["metadata"] == {
        "purpose": "tests",
        "n": 1,
    }
    # The metadata part is not mistaken for the file's content.
    download = await service.client.get(f"{file['urls']['get']}/download", headers=headers)
    assert download.content == b"some notes"


@pytest.mark.parametrize("disposition", ['name="metadata"', 'name="metadata"; filename="blob"'])
@pytest.mark.parametrize(
    "data",
    [b"{not json", b"[1, 2]", b'"a string"', b"null", b"\xff\xfe{}", b'{"a": "' + b"x" * 40_001 + b'"}'],
    ids=["bad-json", "array", "string", "null", "not-utf8", "too-long"],
)
async def test_bad_metadata_is_422_in_either_shape(service: Service, disposition: str, data: bytes) -> None:
    headers = await service.user()
    body, content_type = multipart(CONTENT, (disposition, "application/json", data))
    r = await service.client.post("/v1/files", content=body, headers=headers | content_type)
    assert_problem(r, 422, "invalid_metadata")
    assert (await service.client.get("/v1/files", headers=headers)).json()["results"] == []


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A port on loopback that records whether anybody connected to it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        sock.setblocking(False)
        yield sock


async def test_other_urls_are_never_fetched(service: Service, listener: socket.socket) -> None:
    headers = await service.user()
    port = listener.getsockname()[1]
    for url in (
        f"http://127.0.0.1:{port}/cat.jpg",
        f"http://127.0.0.1:{port}/v1/files/00000000-0000-0000-0000-000000000000",
        "https://example.com/cat.jpg",
        "file:///etc/passwd",
        "http://169.254.169.254/latest/meta-data/",
        "http://testserver/api/wallet",
        "/static/app.css",
        "cat.jpg",
        "http://[::1/cat.jpg",
    ):
        r = await create(service, headers, "image-classification", {"image": url})
        assert_problem(r, 422, "invalid_file_input")
    with pytest.raises(BlockingIOError):
        listener.accept()  # nobody came
