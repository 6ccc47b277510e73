"""The optional propagation features (belief propagation, label spreading, TrustRank): chosen by
ScoringConfig.propagation, cross-fitted like the PageRank lifts, reported in the result's meta."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from graph import GraphConfig, project
from graph.walks import Walks
from loaders import ParameterError, read_tables
from scoring import ScoringConfig, score_tables
from scoring.config import PROPAGATIONS
from scoring.features import FlagVectors, crossfit_folds, label_features
from tests.conftest import KEY, tiny_frames

ALL = ("belief_propagation", "label_spreading", "trustrank")
COLUMNS = ("rel_bp_fraud", "rel_ls_fraud", "rel_trust")


def _walks(frames: dict[str, pd.DataFrame]):  # type: ignore[no-untyped-def]
    tables = read_tables(frames, key=KEY)
    p = project(tables, GraphConfig())
    return p, Walks(p, hub_exponent=1.0, alpha=0.85, tol=1e-12)


def test_crossfitting_keeps_a_users_label_out_of_its_own_propagation_features() -> None:
    # two components: f - x and b1 - b2 - b3, and y - w where y is the only seed
    frames = {
        "relations": pd.DataFrame(
            {"src": ["f", "y", "b1", "b2"], "dst": ["x", "w", "b2", "b3"], "kind": ["transfer"] * 4, "weight": [1.0] * 4}
        ),
        "flags": pd.DataFrame({"user_id": ["f", "y", "b1", "b2"], "label": ["fraud", "fraud", "benign", "benign"]}),
    }
    p, walks = _walks(frames)
    fraud, benign = np.zeros(p.n_users), np.zeros(p.n_users)
    fraud[p.index_of(["f", "y"])] = 1
    benign[p.index_of(["b1", "b2"])] = 1
    flags = FlagVectors(fraud=fraud, benign=benign)
    folds = crossfit_folds(flags, n_folds=2, seed=0)
    feats = label_features(walks, flags, folds, propagation=ALL)
    y = p.index_of(["y"])[0]
    # without its own flag, y's component holds no seed: no evidence either way
    assert feats.loc[y, "rel_bp_fraud"] == 0.5
    assert feats.loc[y, "rel_ls_fraud"] == 0.5
    assert feats.loc[y, "rel_trust"] == 0.0
    naive = label_features(walks, flags, np.full(p.n_users, -1), propagation=ALL)
    assert naive.loc[y, "rel_bp_fraud"] > 0.9 and naive.loc[y, "rel_ls_fraud"] == 1.0
    assert set(feats.attrs["converged"]) == set(COLUMNS) and all(feats.attrs["converged"].values())


def test_belief_propagation_reads_negative_relations_as_counter_evidence() -> None:
    # a fraud f pays x (positive) and gets a negative rating from z; b is benign elsewhere
    frames = {
        "relations": pd.DataFrame(
            {
                "src": ["f", "z", "b"],
                "dst": ["x", "f", "c"],
                "kind": ["transfer", "rating", "transfer"],
                "weight": [5.0, -8.0, 1.0],
            }
        ),
        "flags": pd.DataFrame({"user_id": ["f", "b"], "label": ["fraud", "benign"]}),
    }
    p, walks = _walks(frames)
    fraud, benign = np.zeros(p.n_users), np.zeros(p.n_users)
    fraud[p.index_of(["f"])] = 1
    benign[p.index_of(["b"])] = 1
    feats = label_features(walks, FlagVectors(fraud=fraud, benign=benign), np.full(p.n_users, -1), propagation=("belief_propagation",))
    x, z = p.index_of(["x", "z"])
    assert feats.loc[x, "rel_bp_fraud"] > 0.5 > feats.loc[z, "rel_bp_fraud"]


def test_no_flags_give_the_neutral_values() -> None:
    p, walks = _walks(tiny_frames())
    zeros = np.zeros(p.n_users)
    feats = label_features(walks, FlagVectors(fraud=zeros, benign=zeros), np.full(p.n_users, -1), propagation=ALL)
    assert (feats["rel_bp_fraud"] == 0.5).all() and (feats["lnk_bp_fraud"] == 0.5).all()
    assert (feats["rel_ls_fraud"] == 0.5).all() and (feats["rel_trust"] == 0.0).all()


def test_label_features_reject_an_unknown_propagation() -> None:
    p, walks = _walks(tiny_frames())
    zeros = np.zeros(p.n_users)
    with pytest.raises(ParameterError, match="Unknown propagation 'pagerank'"):
        label_features(walks, FlagVectors(fraud=zeros, benign=zeros), np.full(p.n_users, -1), propagation=("pagerank",))


def test_the_config_selects_the_features_and_reports_convergence() -> None:
    tables = read_tables(tiny_frames(), key=KEY)
    cfg = ScoringConfig(propagation=("trustrank", "belief_propagation"))
    result = score_tables(tables, project(tables, GraphConfig()), config=cfg)
    assert {"lnk_bp_fraud", "rel_bp_fraud", "lnk_trust", "rel_trust"} <= set(result.features.columns)
    assert "rel_ls_fraud" not in result.features.columns
    meta = result.meta["propagation"]
    assert meta["features"] == ["trustrank", "belief_propagation"] and all(meta["converged"].values())
    plain = score_tables(tables, project(tables, GraphConfig()), config=ScoringConfig(propagation=()))
    assert not {"rel_bp_fraud", "rel_trust"} & set(plain.features.columns)


def test_config_validates_propagation_names() -> None:
    assert set(PROPAGATIONS) == set(ALL)
    with pytest.raises(ParameterError, match="Unknown propagation\\(s\\) 'beleif_propagation' in 'propagation'; expected any of belief_propagation"):
        ScoringConfig(propagation=("beleif_propagation",))
    with pytest.raises(ParameterError, match="must be a tuple of names"):
        ScoringConfig(propagation="trustrank")  # type: ignore[arg-type]
    cfg = ScoringConfig(propagation=["trustrank", "trustrank"])  # type: ignore[arg-type]
    assert cfg.propagation == ("trustrank",)
