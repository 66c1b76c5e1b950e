"""Schemathesis against the served OpenAPI schema: every operation, valid and invalid requests,
every response checked against what the schema promises (status codes, media types, bodies,
headers), no server errors, and authentication really enforced where the schema declares it.

The app runs under a real uvicorn on a loopback port with the cheap test predictors and one
worker, so submitted jobs run; requests carry a normal user's token (admin routes an admin's),
and path parameters are sometimes real ids so the cases reach past the 404s.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Err, Ok

from mlservice.app import create_app
from mlservice.db import Database
from mlservice.faces import service as faces
from mlservice.settings import Settings
from mlservice.users.usecases import create_admin
from tests.conftest import PASSWORD, empty_database
from tests.fixtures.live_server import serve_in_thread
from tests.fixtures.predictors import EchoText, FileEcho

log = logging.getLogger(__name__)

# At least this many generated requests per run, spread over the operations and both modes.
MIN_CASES = 1000
CASE_BUDGET = 1200
# Modes and their share of the cases: invalid requests find the 5xx, valid ones reach the code.
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)


@dataclass
class Live:
    base_url: str
    user: dict[str, str]
    admin: dict[str, str]
    # path parameter -> real values (None: let schemathesis generate one)
    ids: dict[str, list[str | None]]
    models: list[str | None]


@pytest.fixture
def live_settings(settings_factory: Callable[..., Settings]) -> Settings:
    return settings_factory(workers=1, rate_limits_enabled=False)


async def _wait_for(client: httpx.AsyncClient, headers: dict[str, str], job_id: str) -> None:
    for _ in range(600):
        job = (await client.get(f"/api/jobs/{job_id}", headers=headers)).json()
        if job["status"] in ("succeeded", "failed", "canceled"):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish")


@pytest.fixture
async def live(database_url: str, live_settings: Settings) -> AsyncIterator[Live]:
    await empty_database(database_url)
    app = create_app(live_settings, predictors={EchoText.slug: EchoText, FileEcho.slug: FileEcho})
    with serve_in_thread(app) as address:
        base_url = address.url
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
            email = f"fuzz-{uuid.uuid4().hex[:8]}@example.com"
            r = await client.post("/api/auth/register", json={"email": email, "password": PASSWORD})
            assert r.status_code == 201, r.text
            user_id = r.json()["id"]
            admin_email = f"fuzz-admin-{uuid.uuid4().hex[:8]}@example.com"
            db = Database(database_url)
            try:
                await create_admin(db, live_settings, admin_email, PASSWORD)
                async with db.session(write=True) as session:
                    face = await faces.add_face(session, uuid.UUID(user_id), "fuzz", [0.0] * 128, None)
            finally:
                await db.dispose()

            async def login(address: str) -> dict[str, str]:
                r = await client.post("/api/auth/jwt/login", data={"username": address, "password": PASSWORD})
                assert r.status_code == 200, r.text
                return {"Authorization": f"Bearer {r.json()['access_token']}"}

            user, admin = await login(email), await login(admin_email)
            r = await client.post(
                f"/api/admin/users/{user_id}/adjustments",
                json={"amount": 1_000_000, "note": "fuzzing budget"},
                headers=admin,
            )
            assert r.status_code == 200, r.text
            file_job = await client.post(
                "/api/jobs", data={"model": FileEcho.slug}, files={"file": ("a.bin", b"abc")}, headers=user
            )
            text_job = await client.post(
                "/api/jobs", data={"model": EchoText.slug, "text": "hi"}, headers=user
            )
            job_ids = [file_job.json()["id"], text_job.json()["id"]]
            for job_id in job_ids:
                await _wait_for(client, user, job_id)
            yield Live(
                base_url,
                user,
                admin,
                ids={
                    "job_id": [*job_ids, None],
                    "name": ["copy", "echo", None],
                    "face_id": [str(face.id), None],
                    "user_id": [user_id, None],
                    "slug": [EchoText.slug, FileEcho.slug, None],
                },
                models=[EchoText.slug, FileEcho.slug, None],
            )


def is_known_gap(
    failure: Exception, date_time_query: set[str], file_fields: frozenset[str] = frozenset()
) -> bool:
    """Findings that say the schema is looser than the service, not that the service is wrong.

    * A schema-valid request refused with 400, 402, 413 or 422 (status_code_conformance and
      response_schema_conformance still check that answer): the service checks what a schema cannot
      say (the password policy, which input each model needs, a top-up limit from the settings,
      ``since`` before ``until``, an opaque cursor, at least one field to change).
    * A scalar query parameter sent several times: FastAPI takes the last value.
    * A number for a date-time query parameter: pydantic reads it as a Unix timestamp.
    * Another type for a file part of a multipart body: on the wire a file is bytes whatever the
      generator meant (``false`` arrives as the five bytes of a file), so nothing could tell.
    """
    name = type(failure).__name__
    if name == "RejectedPositiveData":
        return getattr(failure, "status_code", None) in (400, 402, 413, 422)
    message = str(getattr(failure, "message", ""))
    if name == "AcceptedNegativeData" and " in body" in message and file_fields:
        changed = re.findall(r"/properties/(\w+)\S* \(was \w+, became \w+\)", message)
        if changed and set(changed) <= file_fields:
            return True
    if name != "AcceptedNegativeData" or " in query" not in message:
        return False
    changes = re.findall(r"/properties/(\w+)/\S* \(was \w+, became (\w+)\)", message)
    return bool(changes) and all(
        kind == "array" or (kind in ("number", "integer") and parameter in date_time_query)
        for parameter, kind in changes
    )


@dataclass
class Tally:
    cases: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    failures: dict[tuple[str, str, str], str] = field(default_factory=dict)
    unsatisfiable: list[str] = field(default_factory=list)
    known_gaps: Counter[str] = field(default_factory=Counter)

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)

    def by_check(self) -> Counter[str]:
        return Counter(check for _, check, _ in self.failures)


def _apply_real_ids(case: schemathesis.Case[Any], choice: dict[str, str | None], model: str | None) -> None:
    for name, value in choice.items():
        if value is not None and name in (case.path_parameters or {}):
            case.path_parameters[name] = value
    if (
        model is not None
        and case.path == "/api/jobs"
        and case.method == "POST"
        and isinstance(case.body, dict)
    ):
        # A submission that can succeed: a real model, the input it needs, parameters it takes.
        form: dict[str, Any] = case.body
        form["model"] = model
        form.pop("params", None)
        if model == EchoText.slug:
            form["text"] = str(form.get("text") or "") + " fuzz"
        else:
            form["file"] = b"fuzz"


def _file_fields(raw: dict[str, Any], path: str, method: str) -> frozenset[str]:
    """The properties of an operation's multipart body that are files (or may be)."""
    body = raw["paths"][path][method.lower()].get("requestBody", {})
    schema = body.get("content", {}).get("multipart/form-data", {}).get("schema", {})
    if "$ref" in schema:
        schema = raw["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return frozenset(
        name
        for name, spec in schema.get("properties", {}).items()
        if "binary" in json.dumps(spec) or "contentMediaType" in json.dumps(spec)
    )


def _auth_for(path: str, live: Live) -> dict[str, str]:
    return live.admin if path.startswith("/api/admin/") else live.user


def _ordered(operations: list[Any]) -> Iterator[Any]:
    # Admin operations last: one may disable the models the others submit jobs to.
    yield from sorted(operations, key=lambda op: (op.path.startswith("/api/admin/"), op.path, op.method))


def exercise(operation: Any, mode: GenerationMode, examples: int, live: Live, tally: Tally) -> None:
    session = requests.Session()
    date_time_query = {
        p["name"]
        for p in operation.schema.raw_schema["paths"][operation.path][operation.method.lower()].get(
            "parameters", []
        )
        if p.get("in") == "query" and "date-time" in json.dumps(p.get("schema", {}))
    }
    file_fields = _file_fields(operation.schema.raw_schema, operation.path, operation.method)
    choices = st.fixed_dictionaries({name: st.sampled_from(values) for name, values in live.ids.items()})

    @hypothesis.settings(
        max_examples=examples,
        derandomize=True,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(
        case=operation.as_strategy(generation_mode=mode), choice=choices, model=st.sampled_from(live.models)
    )
    def run(case: schemathesis.Case[Any], choice: dict[str, str | None], model: str | None) -> None:
        if mode is GenerationMode.POSITIVE:
            _apply_real_ids(case, choice, model)
        headers = _auth_for(case.path, live)
        response = case.call(base_url=live.base_url, session=session, headers=headers, timeout=60)
        tally.cases[f"{case.method} {case.path}"] += 1
        tally.statuses[response.status_code] += 1
        try:
            case.validate_response(
                response,
                headers=headers,
                transport_kwargs={"base_url": live.base_url, "session": session, "headers": headers},
            )
        except FailureGroup as group:
            for failure in group.exceptions:
                if is_known_gap(failure, date_time_query, file_fields):
                    tally.known_gaps[f"{case.method} {case.path} {type(failure).__name__}"] += 1
                    continue
                key = (f"{case.method} {case.path}", type(failure).__name__, failure.title)
                tally.failures.setdefault(key, f"{failure.message}\n{case.as_curl_command(headers)}")

    try:
        run()
    except hypothesis.errors.Unsatisfiable:
        # Nothing in the operation can be made invalid (no parameters, no body).
        if mode is not GenerationMode.NEGATIVE:
            raise
        tally.unsatisfiable.append(f"{operation.method.upper()} {operation.path}")


def test_openapi_contract(live: Live, backend: str) -> None:
    # Every case carries a real user's (or admin's) credentials, so generated ones would only be
    # overwritten: a "negative" Authorization header the server never saw is no finding. The
    # ignored_auth check still probes each secured operation without credentials and with bad ones.
    config = schemathesis.Config.from_dict({"generation": {"with-security-parameters": False}})
    schema = schemathesis.openapi.from_url(f"{live.base_url}/openapi.json", config=config)
    results = list(schema.get_all_operations())
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert len(operations) == len(results), [r.err() for r in results if isinstance(r, Err)]
    assert len(operations) >= 20, [f"{op.method} {op.path}" for op in operations]
    tally = Tally()
    runs = [(operation, mode) for operation in _ordered(operations) for mode in MODES]
    for done, (operation, mode) in enumerate(runs):
        # What an operation could not use (nothing in it can be made invalid, or it has few
        # distinct cases) goes to the ones after it.
        examples = math.ceil((CASE_BUDGET - sum(tally.cases.values())) / (len(runs) - done))
        exercise(operation, mode, max(examples, 1), live, tally)

    total = sum(tally.cases.values())
    log.warning(
        "schemathesis (%s): %d operations, %d cases, statuses %s, server errors %d, failures %s, "
        "known schema gaps %s",
        backend,
        len(operations),
        total,
        dict(sorted(tally.statuses.items())),
        tally.server_errors,
        dict(tally.by_check()),
        dict(tally.known_gaps),
    )
    report = "\n\n".join(
        f"{op} [{check}] {title}\n{detail}" for (op, check, title), detail in tally.failures.items()
    )
    if tally.failures:
        pytest.fail(f"{len(tally.failures)} distinct failures:\n\n{report}", pytrace=False)
    assert tally.server_errors == 0
    assert total >= MIN_CASES
