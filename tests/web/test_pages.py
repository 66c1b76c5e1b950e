"""The signed-in user's pages over httpx (no browser): who may see what, the forms they post, the
CSRF check of the JSON API when the session cookie authenticates it, and the per-task result views."""

from __future__ import annotations

import html
import io
import re
import uuid
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from mlservice.faces import service as face_service
from mlservice.jobs.service import input_key
from mlservice.jobs.settle import artifact_key
from mlservice.jobs.tables import Job, JobStatus
from mlservice.predictors.background_removal import BackgroundRemoval
from mlservice.predictors.base import Predictor
from mlservice.predictors.faces import FaceEnroll, FaceIdentify
from mlservice.predictors.image_classifier import ImageClassificationParams, ImageClassifier
from mlservice.predictors.malware import MalwareDetection
from mlservice.predictors.movie_recommendation import MovieRecommendation
from mlservice.types import utcnow
from mlservice.web.param_form import param_fields
from mlservice.web.results import job_result_view
from tests.conftest import Service, wait_for_job
from tests.fixtures.predictors import EchoText
from tests.fixtures.web import browser, csrf

USER_PAGES = ["/", "/jobs", "/wallet", "/faces", "/models/test-echo"]
# Every model, none of them loaded: workers=0 leaves jobs queued and pages need no weights.
ALL_MODELS: list[type[Predictor]] = [
    ImageClassifier,
    BackgroundRemoval,
    MovieRecommendation,
    FaceEnroll,
    FaceIdentify,
    MalwareDetection,
    EchoText,
]


async def new_user(service: Service) -> tuple[str, dict[str, str], uuid.UUID]:
    """A registered account: its e-mail, bearer headers and id."""
    email = f"web-{uuid.uuid4().hex[:10]}@example.com"
    headers = await service.user(email)
    me = await service.client.get("/api/users/me", headers=headers)
    return email, headers, uuid.UUID(me.json()["id"])


def text(response: httpx.Response) -> str:
    return html.unescape(response.text)


def png(width: int = 40, height: int = 30) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 80, 40)).save(buf, format="PNG")
    return buf.getvalue()


async def echo_job(service: Service, headers: dict[str, str], text: str = "hello") -> str:
    r = await service.client.post("/api/jobs", data={"model": "test-echo", "text": text}, headers=headers)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def available(service: Service, headers: dict[str, str]) -> int:
    r = await service.client.get("/api/wallet", headers=headers)
    return int(r.json()["available"])


# -- who sees what -----------------------------------------------------------------------------------


async def test_each_page_renders_for_its_owner(service: Service) -> None:
    email, headers, _ = await new_user(service)
    job = await echo_job(service, headers, "page check")
    await wait_for_job(service.client, headers, job)
    async with browser(service, email) as client:
        for path in [*USER_PAGES, f"/jobs/{job}", "/models/image-classification"]:
            r = await client.get(path)
            assert r.status_code == 200, (path, r.text)
            assert r.headers["content-type"].startswith("text/html")
            assert r.headers["cache-control"] == "no-store"
            body = r.text
            assert "<h1" in body
            assert 'aria-label="Main"' in body  # the signed-in navigation
            # Only this server's assets; nothing the CSP (default-src 'self') would block.
            absolute = re.findall(r'(?:src|href|action)="((?:https?:)?//[^"]*)"', body)
            assert all(url.startswith("http://testserver/") for url in absolute), (path, absolute)
            assert "<script>" not in body
            assert " style=" not in body
            assert "<style" not in body
        jobs = text(await client.get("/jobs"))
        assert f'href="/jobs/{job}"' in jobs
        assert "Echo (tests)" in jobs
        detail = text(await client.get(f"/jobs/{job}"))
        assert "PAGE CHECK" in detail  # a task without its own view: the output as JSON
        assert "charged" in detail
        assert f"/api/jobs/{job}/artifacts/echo" in detail
        wallet = text(await client.get("/wallet"))
        assert 'id="top-up"' in wallet
        assert "Welcome bonus" in wallet
        assert "Charge for a job" in wallet
        assert f'href="/jobs/{job}"' in wallet


async def test_anonymous_visitors_are_sent_to_the_login_page(service: Service) -> None:
    _, headers, _ = await new_user(service)
    job = await echo_job(service, headers)
    async with browser(service) as client:
        for path in [*USER_PAGES, f"/jobs/{job}", f"/jobs/{job}/input-image", "/wallet?page=2"]:
            r = await client.get(path)
            assert r.status_code == 303, path
            assert r.headers["location"].startswith("/login?next=/"), path
        assert (await client.get("/wallet?page=2")).headers["location"] == "/login?next=/wallet%3Fpage%3D2"


async def test_other_peoples_and_unknown_jobs_are_404_pages(service: Service) -> None:
    _, owner_headers, _ = await new_user(service)
    job = await echo_job(service, owner_headers)
    stranger, _, _ = await new_user(service)
    async with browser(service, stranger) as client:
        for path in (
            f"/jobs/{job}",
            f"/jobs/{job}/input-image",
            f"/jobs/{uuid.uuid4()}",
            "/jobs/not-a-job-id",
        ):
            r = await client.get(path)
            assert r.status_code == 404, path
            assert r.headers["content-type"].startswith("text/html")
            assert "Not found" in r.text
            assert 'aria-label="Main"' in r.text  # the error page keeps the signed-in navigation
        r = await client.post(f"/jobs/{job}/cancel", data={"csrf_token": csrf(client)})
        assert r.status_code == 404
    assert (await service.client.get(f"/api/jobs/{job}", headers=owner_headers)).json()[
        "status"
    ] != "canceled"


async def test_unknown_paths_are_html_404s_for_pages_and_json_for_the_api(service: Service) -> None:
    email, _, _ = await new_user(service)
    async with browser(service) as anonymous:
        r = await anonymous.get("/no/such/page")
        assert r.status_code == 404
        assert r.headers["content-type"].startswith("text/html")
        assert "Not found" in r.text
        assert 'href="/login"' in r.text
    async with browser(service, email) as client:
        r = await client.get("/no/such/page")
        assert r.status_code == 404
        assert 'aria-label="Main"' in r.text
        assert email in r.text
        r = await client.get("/api/no/such/route")
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "not_found"
        r = await client.get("/wallet?page=zero")
        assert r.status_code == 400
        assert r.headers["content-type"].startswith("text/html")


async def test_unknown_and_disabled_models_are_404_pages(service: Service) -> None:
    email, _, _ = await new_user(service)
    admin = await service.admin()
    async with browser(service, email) as client:
        assert (await client.get("/models/no-such-model")).status_code == 404
        r = await client.get("/models/test-echo")
        assert r.status_code == 200
        r = await service.client.patch("/api/admin/models/test-echo", json={"enabled": False}, headers=admin)
        assert r.status_code == 200, r.text
        r = await client.get("/models/test-echo")
        assert r.status_code == 404
        assert "not available" in r.text


# -- the model page ------------------------------------------------------------------------------------


async def test_model_page_shows_price_input_and_parameter_controls(service_factory: Any) -> None:
    async with service_factory(ALL_MODELS, workers=0) as service:
        email, _, _ = await new_user(service)
        async with browser(service, email) as client:
            classifier = text(await client.get("/models/image-classification"))
            assert 'type="file"' in classifier
            assert 'accept="image/jpeg,' in classifier
            assert "data-preview" in classifier
            assert re.search(r'data-param="top_k" data-param-type="integer" value="5"', classifier)
            assert 'min="1"' in classifier
            assert 'max="20"' in classifier
            assert "How many of the most likely classes to return." in classifier
            assert "This run costs <strong>5</strong> credits" in classifier
            assert 'data-model="image-classification"' in classifier

            movies = text(await client.get("/models/movie-recommendation"))
            assert "<textarea" in movies
            assert 'type="file"' not in movies

            malware = text(await client.get("/models/malware-detection"))
            assert 'type="file"' in malware
            assert "data-preview" not in malware

            enroll = text(await client.get("/models/face-enroll"))
            assert re.search(r'data-param="label" data-param-type="text"', enroll)
            assert 'maxlength="100"' in enroll
            assert "required" in enroll

            identify = text(await client.get("/models/face-identify"))
            assert 'step="any"' in identify
            assert 'min="0.3"' in identify
            assert 'max="0.8"' in identify
            assert "0 enrolled faces" in identify

            removal = text(await client.get("/models/background-removal"))
            assert "<fieldset" not in removal  # no parameters, no options box


async def test_model_page_warns_before_a_run_the_wallet_cannot_pay(service: Service) -> None:
    email, _, _ = await new_user(service)
    admin = await service.admin()
    r = await service.client.patch("/api/admin/models/test-echo", json={"price": 1000}, headers=admin)
    assert r.status_code == 200, r.text
    async with browser(service, email) as client:
        page = text(await client.get("/models/test-echo"))
        assert "You do not have enough credits for this run." in page
        assert 'href="/wallet#top-up"' in page


def test_parameter_fields_follow_the_params_model() -> None:
    (top_k,) = param_fields(ImageClassificationParams)
    assert (top_k.name, top_k.label, top_k.kind, top_k.required) == ("top_k", "Top k", "integer", False)
    assert (top_k.default, top_k.minimum, top_k.maximum, top_k.step) == (5, 1, 20, "1")
    (label,) = param_fields(FaceEnroll.params_model)
    assert (label.kind, label.required, label.min_length, label.max_length) == ("text", True, 1, 100)
    (threshold,) = param_fields(FaceIdentify.params_model)
    assert (threshold.kind, threshold.step, threshold.minimum, threshold.maximum) == (
        "number",
        "any",
        0.3,
        0.8,
    )
    assert param_fields(BackgroundRemoval.params_model) == []


# -- CSRF on the JSON API with the session cookie --------------------------------------------------------


async def test_api_writes_with_the_session_cookie_need_the_csrf_header(service: Service) -> None:
    email, headers, _ = await new_user(service)
    async with browser(service, email) as client:
        await client.get("/")
        token = csrf(client)
        job = {"model": "test-echo", "text": "hi"}

        refused = [
            await client.post("/api/jobs", data=job),
            await client.post("/api/jobs", data=job, headers={"X-CSRF-Token": "not-the-token"}),
            await client.post("/api/wallet/refill", json={"amount": 5}),
            await client.delete(f"/api/faces/{uuid.uuid4()}"),
        ]
        for r in refused:
            assert r.status_code == 403, r.text
            assert r.json()["error"]["code"] == "csrf_failed"
            assert r.headers["content-security-policy"].startswith("default-src 'self'")
        assert await available(service, headers) == service.settings.signup_bonus

        r = await client.post("/api/jobs", data=job, headers={"X-CSRF-Token": token})
        assert r.status_code == 201, r.text
        r = await client.post("/api/wallet/refill", json={"amount": 5}, headers={"X-CSRF-Token": token})
        assert r.status_code == 200, r.text
        # Reads need no token; a bearer client needs none even with a cookie beside it.
        assert (await client.get("/api/jobs")).status_code == 200
        r = await client.post("/api/wallet/refill", json={"amount": 5}, headers=headers)
        assert r.status_code == 200, r.text
        # Logging out of the cookie session is not a write to protect.
        r = await client.post("/api/auth/cookie/logout")
        assert r.status_code != 403, r.text

    async with browser(service) as anonymous:  # no session cookie: the route's own 401
        r = await anonymous.post("/api/jobs", data={"model": "test-echo", "text": "hi"})
        assert r.status_code == 401


# -- the inline input image ---------------------------------------------------------------------------


async def test_input_image_is_inline_for_its_owner_only_and_only_for_images(service_factory: Any) -> None:
    async with service_factory(ALL_MODELS, workers=0) as service:
        email, headers, _ = await new_user(service)
        stranger, _, _ = await new_user(service)
        r = await service.client.post(
            "/api/jobs",
            data={"model": "image-classification"},
            files={"file": ("photo.bin", png(), "application/octet-stream")},
            headers=headers,
        )
        assert r.status_code == 201, r.text
        image_job = r.json()["id"]
        r = await service.client.post(
            "/api/jobs",
            data={"model": "malware-detection"},
            files={"file": ("page.png", b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/png")},
            headers=headers,
        )
        assert r.status_code == 201, r.text
        file_job = r.json()["id"]
        text_job = await echo_job(service, headers)

        async with browser(service, email) as client:
            r = await client.get(f"/jobs/{image_job}/input-image")
            assert r.status_code == 200
            assert r.content == png()
            assert r.headers["content-type"] == "image/png"  # the decoded format, not the upload's claim
            assert r.headers["x-content-type-options"] == "nosniff"
            assert r.headers["content-security-policy"] == "default-src 'none'; sandbox"
            assert r.headers["content-disposition"].startswith("inline")
            assert "no-store" in r.headers["cache-control"]
            page = text(await client.get(f"/jobs/{image_job}"))
            assert f'src="/jobs/{image_job}/input-image"' in page
            assert "data-job-live" in page
            assert 'action="/jobs/' in page

            for job in (file_job, text_job):
                r = await client.get(f"/jobs/{job}/input-image")
                assert r.status_code == 404, job
                assert "input-image" not in text(await client.get(f"/jobs/{job}"))
        async with browser(service, stranger) as client:
            assert (await client.get(f"/jobs/{image_job}/input-image")).status_code == 404


# -- forms: cancel, top-up, face delete ---------------------------------------------------------------


async def test_cancel_form_cancels_a_queued_job_and_releases_its_hold(service_factory: Any) -> None:
    async with service_factory(workers=0) as service:
        email, headers, _ = await new_user(service)
        job = await echo_job(service, headers)
        assert await available(service, headers) == service.settings.signup_bonus - 3
        async with browser(service, email) as client:
            await client.get(f"/jobs/{job}")
            assert (await client.post(f"/jobs/{job}/cancel", data={})).status_code == 403  # no token
            r = await client.post(f"/jobs/{job}/cancel", data={"csrf_token": csrf(client)})
            assert r.status_code == 303
            assert r.headers["location"] == f"/jobs/{job}"
            page = text(await client.get(r.headers["location"]))
            assert "The job is canceled" in page
            assert "released (not charged)" in page
            assert "data-job-live" not in page
            # Again: refused with the reason, shown on the page.
            r = await client.post(f"/jobs/{job}/cancel", data={"csrf_token": csrf(client)})
            assert r.status_code == 303
            assert "already canceled; it cannot be canceled" in text(await client.get(r.headers["location"]))
        assert await available(service, headers) == service.settings.signup_bonus


async def test_top_up_form_pays_once_per_form_and_refuses_bad_amounts(service: Service) -> None:
    email, headers, _ = await new_user(service)
    bonus = service.settings.signup_bonus
    async with browser(service, email) as client:
        page = text(await client.get("/wallet"))
        key = re.search(r'name="idempotency_key" value="([0-9a-f]+)"', page)
        assert key is not None
        form = {"amount": "40", "idempotency_key": key[1], "csrf_token": csrf(client)}
        r = await client.post("/wallet/top-up", data=form)
        assert r.status_code == 303
        assert "Added 40 credits" in text(await client.get("/wallet"))
        # The same form sent again (a double click): replayed, not paid twice.
        r = await client.post("/wallet/top-up", data=form)
        assert r.status_code == 303
        assert "not charged twice" in text(await client.get("/wallet"))
        assert await available(service, headers) == bonus + 40

        for amount in ("0", "-5", "abc", str(service.settings.max_refill_amount + 1)):
            r = await client.post("/wallet/top-up", data={**form, "amount": amount, "idempotency_key": "x"})
            assert r.status_code == 400, amount
            assert "whole number of credits" in text(r)
        r = await client.post("/wallet/top-up", data={**form, "csrf_token": "forged", "idempotency_key": "y"})
        assert r.status_code == 403
        assert r.headers["content-type"].startswith("text/html")
    assert await available(service, headers) == bonus + 40


async def test_faces_page_lists_and_deletes_only_your_faces(service: Service) -> None:
    email, _, owner = await new_user(service)
    stranger, _, other = await new_user(service)
    async with service.db.session(write=True) as session:
        mine = await face_service.add_face(session, owner, "Ada <b>L</b>", np.ones(128), None)
        theirs = await face_service.add_face(session, other, "Grace", np.zeros(128), None)
        mine_id, theirs_id = mine.id, theirs.id
    async with browser(service, email) as client:
        r = await client.get("/faces")
        assert r.status_code == 200
        assert "Ada &lt;b&gt;L&lt;/b&gt;" in r.text  # escaped
        assert "Grace" not in r.text
        assert f'action="/faces/{mine_id}/delete"' in r.text
        r = await client.post(f"/faces/{theirs_id}/delete", data={"csrf_token": csrf(client)})
        assert r.status_code == 404
        r = await client.post(f"/faces/{mine_id}/delete", data={"csrf_token": csrf(client)})
        assert r.status_code == 303
        page = text(await client.get("/faces"))
        assert "removed from your gallery" in page
        assert "No faces enrolled yet" in page
    async with browser(service, stranger) as client:
        assert "Grace" in text(await client.get("/faces"))


# -- result views per task -------------------------------------------------------------------------------


async def add_finished_job(
    service: Service,
    owner: uuid.UUID,
    model: str,
    output: dict[str, Any],
    *,
    meta: dict[str, Any] | None = None,
    image: bytes | None = None,
    artifacts: dict[str, tuple[bytes, str, str]] | None = None,
) -> uuid.UUID:
    """A succeeded job written straight to the database, with its stored input and artifacts."""
    job_id = uuid.uuid4()
    storage = service.app.state.components.storage
    async with service.db.session(write=True) as session:
        session.add(
            Job(
                id=job_id,
                user_id=owner,
                model_slug=model,
                status=JobStatus.succeeded,
                cost=1,
                params={},
                input_meta=meta or {},
                input_file=input_key(job_id) if image is not None else None,
                output=output,
                artifacts={
                    name: {"media_type": media_type, "filename": filename, "bytes": len(data)}
                    for name, (data, media_type, filename) in (artifacts or {}).items()
                },
                attempts=1,
                started_at=utcnow(),
                finished_at=utcnow(),
                processing_ms=12.5,
            )
        )
        await session.flush()
        if image is not None:
            await storage.put(input_key(job_id), image, session=session)
        for name, (data, _, _) in (artifacts or {}).items():
            await storage.put(artifact_key(job_id, name), data, session=session)
    return job_id


async def test_each_task_has_its_result_view(service_factory: Any) -> None:
    async with service_factory(ALL_MODELS, workers=0) as service:
        email, _, owner = await new_user(service)
        photo = {"format": "png", "width": 400, "height": 300}
        jobs = {
            "classifier": await add_finished_job(
                service,
                owner,
                "image-classification",
                {"predictions": [{"label": "tabby cat", "class_id": 281, "probability": 0.8312}]},
                meta=photo,
                image=png(400, 300),
            ),
            "cutout": await add_finished_job(
                service,
                owner,
                "background-removal",
                {"width": 400, "height": 300, "foreground_fraction": 0.25, "artifacts": ["cutout", "mask"]},
                meta=photo,
                image=png(400, 300),
                artifacts={
                    "cutout": (png(400, 300), "image/png", "cutout.png"),
                    "mask": (png(400, 300), "image/png", "mask.png"),
                },
            ),
            "movies": await add_finished_job(
                service,
                owner,
                "movie-recommendation",
                {
                    "query": "space",
                    "results": [
                        {
                            "title": "Solaris",
                            "year": 1972,
                            "score": 0.61,
                            "summary": "A station.",
                            "genres": ["SF"],
                        }
                    ],
                },
                meta={"chars": 5},
            ),
            "identify": await add_finished_job(
                service,
                owner,
                "face-identify",
                {
                    "faces": [
                        {
                            "box": {"left": 10, "top": 20, "right": 110, "bottom": 140},
                            "label": "Ada",
                            "distance": 0.41,
                            "face_id": str(uuid.uuid4()),
                        },
                        {
                            "box": {"left": 200, "top": 5, "right": 260, "bottom": 70},
                            "label": "unknown",
                            "distance": None,
                            "face_id": None,
                        },
                    ],
                    "gallery_size": 1,
                },
                meta=photo,
                image=png(400, 300),
            ),
            "malware": await add_finished_job(
                service,
                owner,
                "malware-detection",
                {
                    "verdict": "malicious",
                    "score": 0.97,
                    "sha256": "ab" * 32,
                    "kind": "text",
                    "reasons": [
                        {
                            "source": "yara",
                            "name": "eicar",
                            "severity": "high",
                            "description": "EICAR test file",
                            "weight": 0.95,
                        }
                    ],
                    "pe": None,
                    "malconv": {"available": True, "score": None, "reason": "Not a Windows PE file."},
                },
                meta={"bytes": 68, "kind": "text"},
            ),
        }
        async with browser(service, email) as client:
            pages = {name: text(await client.get(f"/jobs/{job}")) for name, job in jobs.items()}
        assert '<meter min="0" max="1" value="0.8312"' in pages["classifier"]
        assert "tabby cat" in pages["classifier"]
        assert "83.1%" in pages["classifier"]
        assert f'src="/api/jobs/{jobs["cutout"]}/artifacts/cutout"' in pages["cutout"]
        assert "checkerboard" in pages["cutout"]
        assert "Download the cut-out" in pages["cutout"]
        assert "Solaris" in pages["movies"]
        assert "1972" in pages["movies"]
        assert "0.61" in pages["movies"]
        assert 'viewBox="0 0 400 300"' in pages["identify"]
        assert '<rect x="10" y="20" width="100" height="120"' in pages["identify"]
        assert "Ada" in pages["identify"]
        assert "unknown" in pages["identify"]
        assert "Malicious" in pages["malware"]
        assert "EICAR test file" in pages["malware"]


def test_results_of_an_unexpected_shape_fall_back_to_json() -> None:
    assert job_result_view("image-classification", None, {}) is None
    view = job_result_view("image-classification", {"predictions": [{"no": "label"}]}, {})
    assert view is not None
    assert view.template is None
    view = job_result_view("some-new-task", {"anything": 1}, {})
    assert view is not None
    assert view.template is None
    view = job_result_view(
        "face-enrollment",
        {"label": "Ada", "box": {"left": 0, "top": 0, "right": 50, "bottom": 60}, "face_id": "x"},
        {"width": 100, "height": 80},
    )
    assert view is not None
    assert view.template == "results/faces.html"
    (mark,) = view.data["marks"]
    assert (mark.left, mark.top, mark.width, mark.height) == (0, 0, 50, 60)
    assert mark.text_y > mark.top  # a box at the top edge has its label inside


@pytest.mark.parametrize("path", ["/static/app.js", "/static/app.css"])
async def test_assets_are_served_locally(service: Service, path: str) -> None:
    r = await service.client.get(path)
    assert r.status_code == 200
    assert "//cdn" not in r.text
