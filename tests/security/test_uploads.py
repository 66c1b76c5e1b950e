"""Request bodies are limited as they arrive, and only the listed image formats are decoded."""

from __future__ import annotations

import asyncio
import io
import struct
import zlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from PIL import Image

from mlservice.edge import Edge
from mlservice.security.uploads import FORM_OVERHEAD_BYTES
from tests.conftest import Service
from tests.fixtures.live_server import serve_in_loop

CHUNK = 64 * 1024


def body_limit(service: Service) -> int:
    return service.settings.max_upload_bytes + FORM_OVERHEAD_BYTES


def assert_payload_too_large(response: httpx.Response) -> None:
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "payload_too_large"


# -- the middleware on its own ---------------------------------------------------------------------


class Feed:
    """An ASGI ``receive`` that hands out ``chunks`` pieces of body and counts how many it gave."""

    def __init__(self, chunks: int, size: int = CHUNK) -> None:
        self.chunks, self.size, self.given = chunks, size, 0

    async def __call__(self) -> dict[str, Any]:
        self.given += 1
        more = self.given < self.chunks
        return {"type": "http.request", "body": b"x" * self.size, "more_body": more}


async def reading_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads the whole body, then answers 200 with its length."""
    total, more = 0, True
    while more:
        message = await receive()
        total += len(message.get("body", b""))
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(total).encode()})


async def call(app: Any, receive: Any, headers: list[tuple[bytes, bytes]]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers}
    await app(scope, receive, send)
    return sent


async def test_announced_length_over_the_limit_is_refused_before_reading() -> None:
    called = False

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal called
        called = True

    feed = Feed(chunks=100)
    sent = await call(Edge(app, max_body_bytes=10 * CHUNK), feed, [(b"content-length", b"6553601")])
    assert sent[0]["status"] == 413
    assert (b"connection", b"close") in sent[0]["headers"]
    assert b'"payload_too_large"' in sent[1]["body"]
    assert feed.given == 0
    assert not called


@pytest.mark.parametrize("announced", [None, b"1000"], ids=["chunked", "lying-length"])
async def test_reading_stops_at_the_limit(announced: bytes | None) -> None:
    feed = Feed(chunks=1000)  # 64 MB on offer
    headers = [(b"content-length", announced)] if announced else []
    sent = await call(Edge(reading_app, max_body_bytes=10 * CHUNK), feed, headers)
    assert sent[0]["status"] == 413
    assert feed.given == 11  # the chunk that crossed the limit is the last one read


async def test_bodies_within_the_limit_pass_untouched() -> None:
    feed = Feed(chunks=10)
    sent = await call(
        Edge(reading_app, max_body_bytes=10 * CHUNK),
        feed,
        [(b"content-length", str(10 * CHUNK).encode())],
    )
    assert sent[0]["status"] == 200
    assert sent[1]["body"] == str(10 * CHUNK).encode()


# -- through the app -------------------------------------------------------------------------------


async def test_oversized_upload_is_refused_before_authentication(service: Service) -> None:
    # No token: the size is judged first, from the header, without reading the body.
    r = await service.client.post(
        "/api/jobs",
        content=b"--b--\r\n",
        headers={"Content-Type": "multipart/form-data; boundary=b", "Content-Length": str(10**9)},
    )
    assert_payload_too_large(r)


async def test_chunked_upload_stops_being_read_at_the_limit(service: Service) -> None:
    headers = await service.user()
    pulled = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal pulled
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n'
        while pulled < 10_000:  # 640 MB if nobody stopped reading
            pulled += 1
            yield b"\xff" * CHUNK

    r = await service.client.post(
        "/api/jobs",
        content=endless(),
        headers=headers | {"Content-Type": "multipart/form-data; boundary=b"},
    )
    assert_payload_too_large(r)
    assert pulled <= body_limit(service) // CHUNK + 2
    assert (await service.client.get("/api/jobs", headers=headers)).json()["total"] == 0


async def test_a_file_of_exactly_the_limit_is_accepted(service_factory: Any, chelsea_jpeg: bytes) -> None:
    limit = 200_000
    async with service_factory(max_upload_bytes=limit, workers=0) as service:
        headers = await service.user()
        exact = chelsea_jpeg + b"\0" * (limit - len(chelsea_jpeg))  # JPEG decoders stop at EOI
        r = await post_image(service, headers, exact)
        assert r.status_code == 201, r.text
        r = await post_image(service, headers, exact + b"\0")
        assert r.status_code == 413
        assert r.json()["error"]["code"] == "file_too_large"
        r = await post_image(service, headers, exact + b"\0" * (FORM_OVERHEAD_BYTES + 1))
        assert_payload_too_large(r)


async def test_real_server_refuses_an_announced_huge_body_at_once(service: Service) -> None:
    # The service fixture runs the app's lifespan; uvicorn only serves it.
    async with serve_in_loop(service.app) as address:
        reader, writer = await asyncio.open_connection(address.host, address.port)
        writer.write(
            b"POST /api/jobs HTTP/1.1\r\nHost: testserver\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 5000000000\r\n\r\n"
        )
        await writer.drain()
        # Not one byte of the 5 GB is sent: the answer comes anyway, and the connection closes.
        answer = await asyncio.wait_for(reader.read(), timeout=10)
        writer.close()
        head = answer.split(b"\r\n\r\n", 1)[0].lower()
        assert head.startswith(b"http/1.1 413")
        assert b"connection: close" in head
        assert b'"payload_too_large"' in answer


# -- image formats and pixel limits ------------------------------------------------------------------


async def post_image(service: Service, headers: dict[str, str], data: bytes) -> httpx.Response:
    return await service.client.post(
        "/api/jobs",
        data={"model": "image-classification"},
        files={"file": ("upload.bin", data, "application/octet-stream")},
        headers=headers,
    )


def encoded(fmt: str, mode: str = "RGB", **options: Any) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (32, 24), (200, 30, 30) if mode == "RGB" else 0).save(buffer, fmt, **options)
    return buffer.getvalue()


def psd_header() -> bytes:
    # Photoshop: signature, version 1, 6 reserved bytes, 3 channels, 24x32, 8 bits, RGB.
    return b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, 24, 32, 8, 3) + b"\0" * 64


ACCEPTED = {
    "jpeg": lambda: encoded("JPEG"),
    "png": lambda: encoded("PNG"),
    "webp": lambda: encoded("WEBP"),
    "bmp": lambda: encoded("BMP"),
    "gif": lambda: encoded("GIF"),
    "tiff": lambda: encoded("TIFF"),
}
REFUSED = {
    "svg": lambda: b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><script/></svg>',
    "psd": psd_header,
    "ico": lambda: encoded("ICO"),
    "ppm": lambda: encoded("PPM"),
    "tga": lambda: encoded("TGA"),
    "pcx": lambda: encoded("PCX"),
    "jpeg2000": lambda: encoded("JPEG2000"),
    "pdf": lambda: encoded("PDF"),
    "eps": lambda: b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n",
    "html": lambda: b"<!doctype html><img src=x onerror=alert(1)>",
    "exe": lambda: b"MZ" + b"\0" * 200,
}


@pytest.fixture
async def image_service(service_factory: Any) -> AsyncIterator[Service]:
    async with service_factory(workers=0) as service:
        yield service


async def test_the_accepted_formats_are_exactly_the_listed_ones(image_service: Service) -> None:
    headers = await image_service.user()
    outcome: dict[str, tuple[int, str]] = {}
    for name, make in (ACCEPTED | REFUSED).items():
        r = await post_image(image_service, headers, make())
        body = r.json()
        outcome[name] = (
            r.status_code,
            body["input"]["format"] if r.status_code == 201 else body["error"]["code"],
        )
    assert outcome == {name: (201, name) for name in ACCEPTED} | {
        name: (415, "unsupported_media_type") for name in REFUSED
    }
    # The refused ones cost nothing: only the accepted ones hold credits.
    wallet = (await image_service.client.get("/api/wallet", headers=headers)).json()
    assert wallet["held"] == 5 * len(ACCEPTED)


def bilevel_png(width: int, height: int) -> bytes:
    """An all-black 1-bit PNG a few kB long, whatever its size in pixels."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        )

    row = b"\0" * (1 + (width + 7) // 8)
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


async def test_decompression_bombs_are_refused_from_the_header(image_service: Service) -> None:
    headers = await image_service.user()
    bomb = bilevel_png(30_000, 30_000)  # 900 megapixels in a few hundred kB
    assert len(bomb) < image_service.settings.max_upload_bytes
    loop = asyncio.get_running_loop()
    started = loop.time()
    r = await post_image(image_service, headers, bomb)
    assert r.status_code == 413, r.text
    assert r.json()["error"]["code"] == "image_too_large"
    assert loop.time() - started < 5  # judged from the header: no pixel was decoded
    assert (await image_service.client.get("/api/wallet", headers=headers)).json()["held"] == 0
