"""Every model of the zoo through the jobs API: priced, charged on success, private to its owner."""

from __future__ import annotations

import io
import os
import stat
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from matplotlib import cbook
from PIL import Image, ImageOps
from skimage import data

from mlservice.predictors.background_removal import BackgroundRemoval
from mlservice.predictors.faces import FaceEnroll, FaceIdentify
from mlservice.predictors.malware import MalwareDetection
from mlservice.predictors.movie_recommendation import MovieRecommendation
from tests.conftest import Service, jpeg_bytes, wait_for_job
from tests.fixtures.api import ledger_totals

ZOO = [BackgroundRemoval, MovieRecommendation, FaceEnroll, FaceIdentify, MalwareDetection]


@pytest.fixture
async def zoo(service_factory: Any) -> AsyncIterator[Service]:
    async with service_factory(predictors=ZOO) as service:
        yield service


async def run_job(service: Service, headers: dict[str, str], model: str, **fields: Any) -> dict[str, Any]:
    files = fields.pop("files", None)
    r = await service.client.post("/api/jobs", data={"model": model, **fields}, files=files, headers=headers)
    assert r.status_code == 201, r.text
    return await wait_for_job(service.client, headers, r.json()["id"], within=120)


def upload(content: bytes, name: str = "upload.jpg") -> dict[str, tuple[str, bytes, str]]:
    return {"file": (name, content, "application/octet-stream")}


async def test_catalog_prices_heavier_models_higher(zoo: Service) -> None:
    prices = {m["slug"]: m["price"] for m in (await zoo.client.get("/api/models")).json()}
    assert set(prices) == {cls.slug for cls in ZOO}
    assert prices["background-removal"] > prices["movie-recommendation"]


async def test_background_removal_artifacts_belong_to_owner(zoo: Service) -> None:
    alice, bob = await zoo.user(), await zoo.user()
    astronaut = jpeg_bytes(data.astronaut())
    job = await run_job(zoo, alice, "background-removal", files=upload(astronaut))
    assert job["status"] == "succeeded", job
    names = {a["name"]: a for a in job["artifacts"]}
    assert set(names) == {"cutout", "mask"}
    cutout = await zoo.client.get(names["cutout"]["url"], headers=alice)
    image = Image.open(io.BytesIO(cutout.content))
    assert (image.mode, image.size) == ("RGBA", (512, 512))
    mask = Image.open(io.BytesIO((await zoo.client.get(names["mask"]["url"], headers=alice)).content))
    assert mask.size == (512, 512)
    assert (await zoo.client.get(names["cutout"]["url"], headers=bob)).status_code == 404
    price = job["cost"]
    assert (await zoo.client.get("/api/wallet", headers=alice)).json()["balance"] == 100 - price


async def test_movie_recommendation(zoo: Service) -> None:
    headers = await zoo.user()
    job = await run_job(
        zoo, headers, "movie-recommendation", text="mafia crime family", params='{"top_k": 3}'
    )
    assert job["status"] == "succeeded", job
    results = job["output"]["results"]
    assert len(results) == 3
    assert results[0]["title"] == "The Godfather"
    r = await zoo.client.post(
        "/api/jobs", data={"model": "movie-recommendation", "text": " "}, headers=headers
    )
    assert r.status_code == 422
    assert await ledger_totals(zoo, headers) == (100 - job["cost"], 0, 3)


async def test_face_gallery_is_private(zoo: Service) -> None:
    alice, bob = await zoo.user(), await zoo.user()
    astronaut = data.astronaut()
    enrolled = await run_job(
        zoo, alice, "face-enroll", files=upload(jpeg_bytes(astronaut)), params='{"label": "Eileen"}'
    )
    assert enrolled["status"] == "succeeded", enrolled
    assert "_embedding" not in enrolled["output"]
    faces = (await zoo.client.get("/api/faces", headers=alice)).json()
    assert [f["label"] for f in faces["items"]] == ["Eileen"]
    assert (await zoo.client.get("/api/faces", headers=bob)).json()["total"] == 0

    variant = ImageOps.mirror(Image.fromarray(astronaut)).resize((307, 307))
    probe = upload(jpeg_bytes(np.asarray(variant)))
    mine = await run_job(zoo, alice, "face-identify", files=probe)
    assert [f["label"] for f in mine["output"]["faces"]] == ["Eileen"]
    theirs = await run_job(zoo, bob, "face-identify", files=probe)
    assert [f["label"] for f in theirs["output"]["faces"]] == ["unknown"]

    face_id = faces["items"][0]["id"]
    assert (await zoo.client.delete(f"/api/faces/{face_id}", headers=bob)).status_code == 404
    assert (await zoo.client.delete(f"/api/faces/{face_id}", headers=alice)).status_code == 204
    again = await run_job(zoo, alice, "face-identify", files=probe)
    assert [f["label"] for f in again["output"]["faces"]] == ["unknown"]


async def test_face_enroll_without_exactly_one_face_costs_nothing(zoo: Service) -> None:
    headers = await zoo.user()
    cat = jpeg_bytes(data.chelsea())
    r = await zoo.client.post(
        "/api/jobs",
        data={"model": "face-enroll", "params": '{"label": "cat"}'},
        files=upload(cat),
        headers=headers,
    )
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "no_face"
    with cbook.get_sample_data("grace_hopper.jpg") as fh:
        hopper = Image.open(fh).convert("RGB").resize((256, 300))
    pair = Image.new("RGB", (512 + 256, 512))
    pair.paste(Image.fromarray(data.astronaut()), (0, 0))
    pair.paste(hopper, (512, 100))
    buf = io.BytesIO()
    pair.save(buf, format="PNG")
    r = await zoo.client.post(
        "/api/jobs",
        data={"model": "face-enroll", "params": '{"label": "two"}'},
        files=upload(buf.getvalue(), "pair.png"),
        headers=headers,
    )
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "multiple_faces"
    missing_label = await zoo.client.post(
        "/api/jobs",
        data={"model": "face-enroll"},
        files=upload(jpeg_bytes(data.astronaut())),
        headers=headers,
    )
    assert missing_label.status_code == 422
    assert await ledger_totals(zoo, headers) == (100, 0, 1)


async def test_malware_scan_of_eicar_and_noise(zoo: Service) -> None:
    headers = await zoo.user()
    # The EICAR test string is assembled at run time with join() (constant `+` would be folded
    # into the full literal in the .pyc), so no file in the repository holds it.
    eicar = "".join(
        ["X5O!P%@AP[4\\PZX54(P^)7CC)7}$", "EICAR-STANDARD-ANTIVIRUS-", "TEST-FILE!$H+H*"]
    ).encode()
    job = await run_job(zoo, headers, "malware-detection", files=upload(eicar, "readme.txt"))
    assert job["status"] == "succeeded", job
    assert job["output"]["verdict"] == "malicious"

    stored = zoo.settings.resolved_storage_dir / "jobs" / job["id"] / "input"
    assert not os.stat(stored).st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    download = await zoo.client.get(f"/api/jobs/{job['id']}/input", headers=headers)
    assert download.headers["content-type"] == "application/octet-stream"
    assert download.headers["content-disposition"].startswith("attachment")
    # Leave no EICAR file behind on disk (tests/predictors/test_malware.py checks the temp dirs).
    await zoo.app.state.components.storage.delete(f"jobs/{job['id']}/input")

    noise = await run_job(zoo, headers, "malware-detection", files=upload(os.urandom(50_000), "blob.bin"))
    assert noise["output"]["verdict"] == "clean"
