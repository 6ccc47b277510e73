from __future__ import annotations

from pathlib import Path

import pytest

from loaders import ConfigError
from socialrisk.settings import ENV_KEY, Settings, load_settings, resolve_key


def test_defaults_and_hash_is_stable() -> None:
    assert Settings().config_hash() == Settings().config_hash()
    # no per-kind hub damping named: the hash of the configurations made before it existed
    from graph.config import GraphConfig

    assert Settings(graph=GraphConfig(hub_exponents={})).config_hash() == Settings().config_hash()
    assert Settings(graph=GraphConfig(hub_exponents={"ip": 1.5})).config_hash() != Settings().config_hash()


def test_toml_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        """
[labels]
chargeback = "fraud"
[graph]
hub_exponent = 0.5
half_life_days = 90
[graph.hub_exponents]
ip = 1.5
[graph.relation_kinds.transfer]
weight = 2.0
direction = "forward"
[scoring]
approve_at = 700
propagation = ["label_spreading", "trustrank"]
[scoring.columns]
repayment = [{column = "late", denominator = "total", reason = "{value:.0f} of {denominator:.0f} late"}]
"""
    )
    s = load_settings(path)
    assert s.graph.hub_exponent == 0.5 and s.graph.half_life_days == 90
    assert s.graph.hub_exponent_of("ip") == 1.5 and s.graph.hub_exponent_of("email") == 0.5
    assert s.graph.relation("transfer").direction == "forward" and s.graph.relation("contact").weight == 0.5
    assert s.scoring.approve_at == 700 and s.scoring.columns["repayment"][0].denominator == "total"
    assert s.scoring.propagation == ("label_spreading", "trustrank")
    assert s.label_map["chargeback"] == "fraud" and s.label_map["fraud"] == "fraud"
    assert s.config_hash() != Settings().config_hash()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[graph]\nhub_exponnent = 1\n", "hub_exponnent"),
        ("[graph]\nhub_exponent = -1\n", "hub_exponent"),
        ("[graph.hub_exponents]\nip = -1\n", "hub exponent of kind 'ip'"),
        ("[scoring]\napprove_at = 400\nreview_at = 600\n", "review_at"),
        ("not toml at all [", "not a readable TOML"),
        ('[scoring]\npropagation = ["pagerankk"]\n', "propagation"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_settings(path)
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "missing.toml")


def test_key_comes_from_env_then_config_then_workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_KEY, raising=False)
    key, notice = resolve_key(Settings(), tmp_path)
    assert notice is not None and "generated" in notice and str(tmp_path) in notice
    assert (tmp_path / "pseudonym.key").stat().st_mode & 0o077 == 0  # owner only
    again, notice2 = resolve_key(Settings(), tmp_path)
    assert again == key and notice2 is None  # said once
    assert resolve_key(Settings(config_key="config-key-0123456789"), tmp_path)[0] == b"config-key-0123456789"
    monkeypatch.setenv(ENV_KEY, "env-key-0123456789abcdef")
    assert resolve_key(Settings(config_key="config-key-0123456789"), tmp_path)[0] == b"env-key-0123456789abcdef"
    monkeypatch.setenv(ENV_KEY, "short")
    with pytest.raises(ConfigError, match="at least 16"):
        resolve_key(Settings(), tmp_path)


def test_decision_policy_from_config(tmp_path: Path) -> None:
    from scoring.policy import POLICIES

    path = tmp_path / "c.toml"
    path.write_text('[scoring]\npolicy = "eu"\n')
    assert load_settings(path).scoring.policy == POLICIES["eu"]
    path.write_text('[scoring]\ngraph_evidence = "review"\nhuman_review = "call 0800"\n')
    p = load_settings(path).scoring.policy
    assert (p.name, p.credit_features, p.graph_evidence, p.human_review) == ("default", ("all",), "review", "call 0800")
    path.write_text('[scoring]\npolicy = "strict"\n[scoring.policies.strict]\ncredit_features = ["own", "linked_accounts"]\n')
    assert load_settings(path).scoring.policy.credit_features == ("own", "linked_accounts")


def test_unknown_policy_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[scoring]\npolicy = "mars"\n')
    with pytest.raises(ConfigError, match=r"c\.toml: Unknown decision policy 'mars'; expected one of default, eu\.$"):
        load_settings(path)
    path.write_text('[scoring]\npolicy = "x"\n[scoring.policies.x]\ncredit_features = ["friends"]\n')
    with pytest.raises(ConfigError, match="Unknown feature group\\(s\\) 'friends' in 'credit_features' of policy 'x'"):
        load_settings(path)
