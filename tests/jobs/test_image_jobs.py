"""Image jobs through the API: every bad upload is refused before anything is written."""

from __future__ import annotations

import io
from typing import Any

import pytest
from PIL import Image

from tests.conftest import Service, wait_for_job
from tests.fixtures.api import ledger_totals


def png(width: int, height: int, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (width, height)).save(buf, format="PNG")
    return buf.getvalue()


async def post_image(service: Service, headers: dict[str, str], data: bytes, **fields: str) -> Any:
    return await service.client.post(
        "/api/jobs",
        data={"model": "image-classification", **fields},
        files={"file": ("upload.jpg", data, "image/jpeg")},
        headers=headers,
    )


async def test_classify_cat_in_process(service: Service, chelsea_jpeg: bytes) -> None:
    headers = await service.user()
    r = await post_image(service, headers, chelsea_jpeg, params='{"top_k": 2}')
    assert r.status_code == 201, r.text
    job = await wait_for_job(service.client, headers, r.json()["id"])
    assert job["status"] == "succeeded", job
    assert [p["class_id"] in range(281, 286) for p in job["output"]["predictions"]] == [True, True]
    assert job["input"]["format"] == "jpeg"


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        ("not_an_image", 415, "unsupported_media_type"),
        ("truncated", 422, "corrupt_image"),
        ("too_many_pixels", 413, "image_too_large"),
        ("too_many_bytes", 413, "file_too_large"),
        ("empty", 422, "empty_input"),
        ("top_k_zero", 422, "invalid_params"),
        ("top_k_text", 422, "invalid_params"),
        ("no_file", 422, "missing_input"),
    ],
)
async def test_bad_image_input_costs_nothing(
    service_factory: Any, chelsea_jpeg: bytes, case: str, status: int, code: str
) -> None:
    async with service_factory(max_image_pixels=1_000_000, max_upload_bytes=200_000) as service:
        headers = await service.user()
        fields: dict[str, str] = {}
        data: bytes | None = chelsea_jpeg
        if case == "not_an_image":
            data = b"%PDF-1.4 definitely not a picture" * 10
        elif case == "truncated":
            data = chelsea_jpeg[: len(chelsea_jpeg) // 2]
        elif case == "too_many_pixels":
            data = png(1500, 1000, mode="1")
        elif case == "too_many_bytes":
            data = chelsea_jpeg + b"\0" * 200_000
        elif case == "empty":
            data = b""
        elif case == "top_k_zero":
            fields["params"] = '{"top_k": 0}'
        elif case == "top_k_text":
            fields["params"] = '{"top_k": "three"}'
        if case == "no_file":
            r = await service.client.post(
                "/api/jobs", data={"model": "image-classification"}, headers=headers
            )
        else:
            assert data is not None
            r = await post_image(service, headers, data, **fields)
        assert r.status_code == status, r.text
        assert r.json()["error"]["code"] == code
        assert await ledger_totals(service, headers) == (100, 0, 1)
        assert (await service.client.get("/api/jobs", headers=headers)).json()["total"] == 0
        assert not list((service.settings.resolved_storage_dir).glob("jobs/*/input"))
