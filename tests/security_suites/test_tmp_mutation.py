from typing import Any
import pytest
from mlservice.jobs import service as jobs_service
from mlservice.jobs.tables import Job
from tests.fixtures.predictors import EchoText
from tests.security_suites.predictors import FileEcho
from tests.security_suites.test_authorization import run_matrix

async def test_mutant(service_factory: Any, monkeypatch: pytest.MonkeyPatch, backend: str) -> None:
    if backend != "sqlite":
        pytest.skip()
    async with service_factory(predictors=[EchoText, FileEcho], workers=0, rate_limits_enabled=False) as service:
        matrix, routes = await run_matrix(service)
    print(matrix.cross_user_reads, matrix.cross_user_writes, matrix.escalations)
    print("\n".join(matrix.problems))
