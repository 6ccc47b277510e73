"""The default configuration on the real labelled graphs (../shared/data), under the contract's
protocol, must match or beat the best reference figures of ../shared/data/README.md (the floors
below; AMLSim's sit between the reference and the measured results in
benchmarks/results/quality.json)."""

from __future__ import annotations

import pytest

from socialrisk.settings import Settings
from socialrisk.workflow import evaluate_dir
from tests.conftest import SHARED_DATA

FLOORS = {
    # data: (AUROC floor, AUPRC floor)
    "bitcoin-otc": (0.989, 0.992),
    "tolokers": (0.844, 0.573),
    "amlsim-20k_fanin200cycle200": (0.90, 0.75),
    "afd-registration-20k": (0.991, 0.959),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FLOORS))
def test_default_configuration_beats_the_references(name: str) -> None:
    path = SHARED_DATA / name
    assert path.is_dir(), f"{path} is missing: the shared data sits beside the repository"
    report = evaluate_dir(path, Settings(), train_frac=0.4, repeats=5, seed=0)
    m = report.summary()
    auroc_floor, auprc_floor = FLOORS[name]
    assert m["auroc"]["mean"] >= auroc_floor
    assert m["auprc"]["mean"] >= auprc_floor
