"""Decision policies: two outputs, what each may see, and how they decide."""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

import numpy as np
import pandas as pd
import pytest

from graph import GraphConfig, project
from loaders import ParameterError, read_tables
from loaders.synthetic import generate
from scoring import ScoringConfig, score_tables
from scoring.pipeline import OUTPUT_COLUMNS, ScoreResult
from scoring.policy import POLICIES, DecisionPolicy, combine_outputs, credit_columns, feature_group, policy_named, principal_reasons
from tests.conftest import KEY

EU = POLICIES["eu"]
DEFAULT = POLICIES["default"]


def _decide(policy: DecisionPolicy, **kw: list) -> tuple[list[str], list[str]]:  # type: ignore[type-arg]
    arrays = {k: np.asarray(v, dtype=np.float64 if k != "own_fraud" else bool) for k, v in kw.items()}
    d = combine_outputs(policy=policy, approve_at=650, review_at=550, **arrays)
    return d.decision.tolist(), d.basis.tolist()


def test_stricter_output_decides_and_graph_alone_never_rejects_under_review() -> None:
    # risk 0.9 is 350 points (reject), 0.4 is 629 (review), 0.1 is 758 (approve)
    kw = dict(
        fraud_risk=[0.9, 0.9, 0.1, 0.4, 0.9, 0.1],
        credit_risk=[0.1, 0.1, 0.9, 0.1, 0.9, 0.1],
        fraud_without_graph=[0.1, 0.9, 0.1, 0.1, 0.1, 0.1],
        credit_without_graph=[0.1, 0.1, 0.9, 0.1, 0.9, 0.1],
        own_fraud=[False, False, False, False, False, False],
    )
    assert _decide(DEFAULT, **kw) == (
        ["reject", "reject", "reject", "review", "reject", "approve"],
        ["fraud", "fraud", "credit", "fraud", "fraud+credit", ""],
    )
    # user 0: rejected on its graph alone -> review; user 1: rejects without its graph too;
    # user 2 and 4: the credit output rejects on the user's own data
    assert _decide(EU, **kw) == (
        ["review", "reject", "reject", "review", "reject", "approve"],
        ["graph_evidence_review", "fraud", "credit", "fraud", "fraud+credit", ""],
    )


def test_own_fraud_flag_is_not_graph_evidence() -> None:
    kw = dict(fraud_risk=[1.0], credit_risk=[0.1], fraud_without_graph=[0.1], credit_without_graph=[0.1], own_fraud=[True])
    assert _decide(EU, **kw)[0] == ["reject"]


def test_review_route_on_every_refusal_only() -> None:
    d = combine_outputs(
        fraud_risk=np.array([0.9, 0.4, 0.1]), credit_risk=np.array([0.1, 0.1, 0.1]),
        fraud_without_graph=np.array([0.1, 0.4, 0.1]), credit_without_graph=np.array([0.1, 0.1, 0.1]),
        own_fraud=np.zeros(3, dtype=bool), policy=EU, approve_at=650, review_at=550,
    )
    assert [bool(r) for r in d.review_route] == [True, True, False]
    assert d.review_route[0] == EU.human_review and "reviewed by a person" in EU.human_review
    assert d.risk.tolist() == [0.9, 0.4, 0.1]


def test_feature_groups_and_credit_columns() -> None:
    cols = ["usr_repayments_late", "lnk_lift_fraud", "rel_nbr1_repayments_late", "rel_contact_count", "vel_new"]
    assert [feature_group(c) for c in cols] == ["own", "linked_accounts", "social_network", "social_network", None]
    assert credit_columns(cols, EU) == ["usr_repayments_late"]
    assert credit_columns(cols, DEFAULT) == cols
    both = DecisionPolicy("x", credit_features=("own", "linked_accounts"))
    assert credit_columns(cols, both) == ["usr_repayments_late", "lnk_lift_fraud"]


def test_bad_policies_are_one_line_errors() -> None:
    with pytest.raises(ParameterError, match=r"^Unknown decision policy 'us'; expected one of default, eu\.$"):
        policy_named("us")
    with pytest.raises(ParameterError, match="Unknown feature group\\(s\\) 'friends'"):
        DecisionPolicy("x", credit_features=("friends",))
    with pytest.raises(ParameterError, match="'graph_evidence' of policy 'x' must be one of decide, review"):
        DecisionPolicy("x", graph_evidence="maybe")
    with pytest.raises(ParameterError, match="must be a list of groups"):
        DecisionPolicy("x", credit_features="own")  # type: ignore[arg-type]


def test_principal_reasons_at_most_four_of_the_refusing_output() -> None:
    fraud = [[("LINKED_FRAUD_DEVICE", "shares a device with 1 account confirmed as fraud")]] * 3
    credit = [[(f"C{k}", f"c{k}") for k in range(6)] + [("SCORE_TOO_LOW", "score too low")]] * 3
    out = principal_reasons(["approve", "reject", "review"], ["", "credit", "graph_evidence_review"], fraud, credit)
    assert out[0] == []
    assert out[1] == [("C0", "c0"), ("C1", "c1"), ("C2", "c2"), ("C3", "c3")]
    # a review made from graph evidence names the graph evidence, not the credit file
    assert out[2] == fraud[2]
    generic = principal_reasons(["reject"], ["credit"], [[]], [[("SCORE_TOO_LOW", "score too low"), ("C0", "c0")]])
    assert generic == [[("C0", "c0")]]


# -- on a generated population ---------------------------------------------------------------


@lru_cache(maxsize=None)
def _frames() -> dict[str, pd.DataFrame]:
    g = generate(n_users=3_000, seed=4, fraud_rate=0.05, flag_rate=0.6, benign_flag_rate=0.1)
    return {k: v for k, v in g.items() if k != "truth"}


@lru_cache(maxsize=None)
def _score(policy: str, perturbed: bool = False, graph_evidence: str | None = None) -> ScoreResult:
    frames = dict(_frames())
    if perturbed:
        frames["relations"] = _perturb(frames["relations"], frames["flags"])
    tables = read_tables(frames, key=KEY)
    p = policy_named(policy)
    if graph_evidence is not None:
        p = replace(p, graph_evidence=graph_evidence)
    return score_tables(tables, project(tables, GraphConfig()), config=ScoringConfig(policy=p))


def _perturb(relations: pd.DataFrame, flags: pd.DataFrame) -> pd.DataFrame:
    """Social relations only: drop a third of them, add contacts and transfers from flagged
    fraud users to users that had none with them (users, links and flags untouched)."""
    rng = np.random.default_rng(7)
    kept = relations.loc[rng.random(len(relations)) > 0.33]
    fraud = flags.loc[flags["label"] == "fraud", "user_id"].to_numpy()
    users = relations["src"].drop_duplicates().to_numpy()
    k = 600
    added = pd.DataFrame(
        {
            "src": rng.choice(fraud, k),
            "dst": rng.choice(users, k),
            "kind": np.where(rng.random(k) < 0.5, "contact", "transfer"),
            "weight": np.round(rng.uniform(5, 500, k), 2),
            "ts": "2026-10-01T00:00:00Z",
        }
    )
    added = added.loc[added["src"] != added["dst"]]
    return pd.concat([kept, added], ignore_index=True).astype({"kind": "string", "src": "string", "dst": "string", "ts": "string"})


def test_default_policy_is_one_score() -> None:
    s = _score("default").scores
    assert set(OUTPUT_COLUMNS) <= set(s.columns)
    assert np.array_equal(s["fraud_risk"], s["credit_risk"]) and np.array_equal(s["risk"], s["fraud_risk"])
    assert (s["decision"] == s["fraud_decision"]).all() and (s["policy"] == "default").all()
    assert (s["review_route"] == "").all()


def test_eu_credit_risk_does_not_move_when_only_social_relations_change() -> None:
    before, after = _score("eu").scores, _score("eu", perturbed=True).scores
    assert before["user_id"].tolist() == after["user_id"].tolist()
    # the perturbation is real: the fraud output moves
    moved = np.abs(before["fraud_risk"].to_numpy() - after["fraud_risk"].to_numpy())
    assert (moved > 1e-3).sum() > 100
    np.testing.assert_array_equal(before["credit_risk"].to_numpy(), after["credit_risk"].to_numpy())
    assert (before["credit_reasons"] == after["credit_reasons"]).all()
    assert not before["credit_reason_codes"].str.contains("SOCIAL|LINKED").any()


def test_eu_refusals_carry_the_review_route_and_specific_reasons() -> None:
    s = _score("eu").scores
    refused = s["decision"] != "approve"
    assert refused.sum() > 0
    assert (s.loc[refused, "review_route"] == EU.human_review).all() and (s.loc[~refused, "review_route"] == "").all()
    n_reasons = s["principal_reason_codes"].map(lambda r: len([c for c in r.split(";") if c]))
    assert (n_reasons[refused] >= 1).all() and (n_reasons <= 4).all() and (n_reasons[~refused] == 0).all()
    assert not s["principal_reasons"].str.contains("score too low", case=False).any()
    # a credit refusal is explained by the credit file, never by the graph
    credit_only = s["decision_basis"] == "credit"
    assert not s.loc[credit_only, "principal_reason_codes"].str.contains("SOCIAL|LINKED|CONFIRMED").any()


def test_graph_evidence_review_only_turns_rejections_into_reviews() -> None:
    plain, reviewed = _score("default").scores, _score("default", graph_evidence="review").scores
    changed = plain["decision"] != reviewed["decision"]
    assert changed.sum() > 0
    assert (plain.loc[changed, "decision"] == "reject").all() and (reviewed.loc[changed, "decision"] == "review").all()
    assert (reviewed.loc[changed, "decision_basis"] == "graph_evidence_review").all()
    # never for a user confirmed as fraud by its own flag
    assert (reviewed.loc[changed, "flag"] != "fraud").all()
