"""The default configuration on the real labelled graphs (../shared/data), under the contract's
protocol. The figures to beat are in ../shared/data/README.md; these floors sit a little below
the measured results (benchmarks/results/quality.json) to catch regressions, not noise."""

from __future__ import annotations

import pytest

from socialrisk.settings import Settings
from socialrisk.workflow import evaluate_dir
from tests.conftest import SHARED_DATA

FLOORS = {
    # data: (AUROC floor, AUPRC floor); best references 0.989/0.992, 0.844/0.573, 0.834/0.459
    "bitcoin-otc": (0.985, 0.988),
    "tolokers": (0.840, 0.565),
    "amlsim-20k_fanin200cycle200": (0.90, 0.75),
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
