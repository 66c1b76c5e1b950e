from typing import Any
import pytest
from mlservice.jobs import service as jobs_service
from tests.security_suites import test_wallet_state_machine as m

def test_mutant(database_url, settings_factory, backend, caplog, monkeypatch: pytest.MonkeyPatch) -> None:
    class W:
        def __getattr__(self, name):
            import mlservice.wallet.service as w
            return getattr(w, name)
        async def release_hold(self, session, job_id):
            return None
    monkeypatch.setattr(jobs_service, "wallet", W())
    m.test_wallet_state_machine(database_url, settings_factory, backend, caplog)
