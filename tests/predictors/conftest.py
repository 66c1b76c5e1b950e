"""Fixtures shared by the predictor tests."""

from __future__ import annotations

import pytest

from mlservice.predictors.malware import MalwareDetection


@pytest.fixture(scope="module")
def scanner(tmp_path_factory: pytest.TempPathFactory) -> MalwareDetection:
    predictor = MalwareDetection(tmp_path_factory.mktemp("model-cache"), intra_op_num_threads=2)
    predictor.prepare()
    predictor.load()
    return predictor
