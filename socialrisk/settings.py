"""Application settings: a TOML file plus the environment, resolved once at the edge."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from graph.config import GraphConfig, RelationKind
from loaders.errors import ConfigError, ParameterError
from loaders.normalise import EmailRule, Normalisation
from loaders.pseudonym import key_fingerprint, new_key, parse_key
from loaders.validate import DEFAULT_LABEL_MAP
from scoring.config import ColumnSpec, ScoringConfig
from scoring.policy import DecisionPolicy, policy_named

__all__ = ["Settings", "ServiceConfig", "load_settings", "resolve_key", "ENV_KEY", "ENV_WORKSPACE", "DEFAULT_WORKSPACE"]

ENV_KEY = "SOCIALRISK_PSEUDONYM_KEY"
ENV_WORKSPACE = "SOCIALRISK_WORKSPACE"
DEFAULT_WORKSPACE = ".socialrisk"
KEY_FILE = "pseudonym.key"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _RelationKindModel(_Strict):
    weight: float = Field(1.0, ge=0)
    direction: Literal["both", "forward", "backward"] = "both"


class _GraphModel(_Strict):
    link_weights: dict[str, float] | None = None
    default_link_weight: float | None = Field(None, ge=0)
    relation_kinds: dict[str, _RelationKindModel] | None = None
    weight_transform: Literal["log1p", "linear", "unit"] | None = None
    hub_exponent: float | None = Field(None, ge=0)
    hub_exponents: dict[str, float] | None = None
    hub_max_degree: int | None = Field(None, ge=2)
    half_life_days: float | None = Field(None, gt=0)
    dispute_weights: dict[str, float] | None = None


class _ColumnModel(_Strict):
    column: str
    higher_is_riskier: bool = True
    denominator: str | None = None
    reason: str | None = None
    no_history: str | None = None


class _PolicyModel(_Strict):
    credit_features: list[str] = ["all"]
    graph_evidence: Literal["decide", "review"] = "decide"
    human_review: str = ""
    description: str = ""


class _ScoringModel(_Strict):
    policy: str | None = None
    graph_evidence: Literal["decide", "review"] | None = None
    human_review: str | None = None
    policies: dict[str, _PolicyModel] | None = None
    protected_columns: list[str] | None = None
    columns: dict[str, list[_ColumnModel]] | None = None
    scorecard_weights: dict[str, float] | None = None
    min_labels_per_class: int | None = None
    alpha: float | None = None
    tol: float | None = None
    crossfit_folds: int | None = None
    model: Literal["boosting", "logistic"] | None = None
    boosting_iter: int | None = None
    learning_rate: float | None = None
    max_leaf_nodes: int | None = None
    min_samples_leaf: int | None = None
    l2_regularization: float | None = None
    approve_at: int | None = None
    review_at: int | None = None
    min_reason_share: float | None = None
    max_reasons: int | None = None
    prior_fraud_rate: float | None = Field(None, gt=0, lt=1)
    seed: int | None = None
    propagation: list[Literal["belief_propagation", "label_spreading", "trustrank"]] | None = None


class _ServiceModel(_Strict):
    api_keys: list[str] | None = None
    host: str | None = None
    port: int | None = Field(None, ge=1, le=65535)
    unknown_user: Literal["404", "neutral"] | None = None
    neutral_risk: float | None = Field(None, gt=0, lt=1)
    health_seconds: float | None = Field(None, gt=0)
    refresh_seconds: float | None = Field(None, gt=0)
    store_timeout: float | None = Field(None, gt=0)
    live_capacity: int | None = Field(None, ge=0)


class _EmailRuleModel(_Strict):
    dots: bool = False
    plus: bool = True
    canonical_domain: str | None = None


class _NormaliseModel(_Strict):
    default_region: str | None = None
    ip_prefix: bool | None = None
    #: Provider rules by mail domain, added to (or replacing) the built-in ones.
    email_providers: dict[str, _EmailRuleModel] | None = None


class _FairnessModel(_Strict):
    segment: str | None = None


class _FileModel(_Strict):
    pseudonym_key: str | None = None
    normalise: _NormaliseModel = _NormaliseModel()
    labels: dict[str, Literal["fraud", "benign"]] | None = None
    graph: _GraphModel = _GraphModel()
    scoring: _ScoringModel = _ScoringModel()
    service: _ServiceModel = _ServiceModel()
    fairness: _FairnessModel = _FairnessModel()


@dataclass(frozen=True)
class ServiceConfig:
    """How ``socialrisk serve`` runs (the ``[service]`` table of the config file).

    Attributes
    ----------
    api_keys : tuple of str
        Keys accepted as ``Authorization: Bearer KEY`` on every ``/v1`` route;
        ``SOCIALRISK_API_KEYS`` (comma-separated) replaces them when set. Never logged.
    host, port : str, int
        Where to listen; loopback by default.
    unknown_user : {"404", "neutral"}
        What ``/v1/enrich`` answers for a user without a score: 404, or a neutral score.
    neutral_risk : float or None
        The risk of the neutral score; None: ``scoring.prior_fraud_rate`` (0.05 if unset).
    health_seconds : float
        How often the store is probed; ``/readyz`` and the ``stale`` mark follow it.
    refresh_seconds : float
        How often the store is asked whether a new scoring was written (then it is reloaded).
    store_timeout : float
        Deadline of a call to the store made for a request (neighbourhood on Neo4j); past it
        the answer is 503 with ``Retry-After``.
    live_capacity : int
        Users that committed applications and events may add to the live graph between two full
        scorings; past it they are refused with 503 and ``Retry-After`` (the next scoring, which
        reads them from the store, makes room again).
    """

    api_keys: tuple[str, ...] = ()
    host: str = "127.0.0.1"
    port: int = 8000
    unknown_user: str = "404"
    neutral_risk: float | None = None
    health_seconds: float = 1.0
    refresh_seconds: float = 10.0
    store_timeout: float = 2.0
    live_capacity: int = 100_000


class Settings:
    """Resolved configuration: graph and scoring settings, label map, key source.

    Attributes
    ----------
    graph : GraphConfig
    scoring : ScoringConfig
    label_map : dict
    config_key : str or None
        Pseudonymisation key from the config file (the environment takes precedence).
    source : Path or None
        The file the settings came from.
    service : ServiceConfig
        How the HTTP service runs (not part of :meth:`config_hash`: it changes no score).
    normalise : Normalisation
        How identifier values are normalised before they are pseudonymised (the
        ``[normalise]`` table: ``default_region``, ``ip_prefix``, ``email_providers``).
    fairness_segment : str or None
        A user column (``segment`` in the ``[fairness]`` table) by whose values ``socialrisk
        evaluate`` also reports the fairness table of the hidden users; None: no such table.
    """

    def __init__(
        self,
        *,
        graph: GraphConfig | None = None,
        scoring: ScoringConfig | None = None,
        label_map: dict[str, str] | None = None,
        config_key: str | None = None,
        source: Path | None = None,
        service: ServiceConfig | None = None,
        normalise: Normalisation | None = None,
        fairness_segment: str | None = None,
    ) -> None:
        self.graph = graph or GraphConfig()
        self.normalise = normalise or Normalisation()
        self.service = service or ServiceConfig()
        self.scoring = scoring or ScoringConfig()
        self.label_map = dict(label_map or DEFAULT_LABEL_MAP)
        self.config_key = config_key
        self.source = source
        self.fairness_segment = fairness_segment

    def config_hash(self) -> str:
        """A stable hash of everything that changes scores (not the key)."""
        graph = _jsonable(self.graph)
        if not graph["hub_exponents"]:
            del graph["hub_exponents"]  # unset, the hash of every configuration from before it existed
        payload = {
            "graph": graph,
            "scoring": _jsonable(self.scoring),
            "labels": self.label_map,
            "normalise": self.normalise.fingerprint(),
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_settings(path: str | Path | None = None) -> Settings:
    """Read a TOML config file (every key optional); without one, the defaults.

    Raises
    ------
    ConfigError
        Unreadable file, unknown keys (typos are not ignored), or values out of range.
    """
    if path is None:
        return Settings()
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: config file not found") from exc
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable TOML file ({exc})") from exc
    try:
        model = _FileModel.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{path}: [{where}] {first['msg']} (got {first.get('input')!r})") from exc
    try:
        graph_kwargs: dict[str, Any] = {}
        g = model.graph
        if g.link_weights is not None:
            graph_kwargs["link_weights"] = {**GraphConfig().link_weights, **g.link_weights}
        if g.dispute_weights is not None:
            graph_kwargs["dispute_weights"] = {**GraphConfig().dispute_weights, **g.dispute_weights}
        if g.hub_exponents is not None:
            graph_kwargs["hub_exponents"] = dict(g.hub_exponents)
        if g.relation_kinds is not None:
            kinds = dict(GraphConfig().relation_kinds)
            kinds.update({k: RelationKind(v.weight, v.direction) for k, v in g.relation_kinds.items()})
            graph_kwargs["relation_kinds"] = kinds
        for name in ("default_link_weight", "weight_transform", "hub_exponent", "half_life_days"):
            if getattr(g, name) is not None:
                graph_kwargs[name] = getattr(g, name)
        if "hub_max_degree" in g.model_fields_set:
            graph_kwargs["hub_max_degree"] = g.hub_max_degree
        graph = GraphConfig(**graph_kwargs)
        s = model.scoring
        scoring_kwargs: dict[str, Any] = {
            k: v
            for k, v in s.model_dump(
                exclude={"columns", "scorecard_weights", "policy", "graph_evidence", "human_review", "policies", "protected_columns"}
            ).items()
            if v is not None
        }
        if s.protected_columns is not None:
            scoring_kwargs["protected_columns"] = tuple(s.protected_columns)
        scoring_kwargs["policy"] = _policy(s)
        if s.columns is not None:
            scoring_kwargs["columns"] = {
                dim: tuple(ColumnSpec(c.column, c.higher_is_riskier, c.denominator, c.reason, c.no_history) for c in cols)
                for dim, cols in s.columns.items()
            }
        if s.scorecard_weights is not None:
            scoring_kwargs["scorecard_weights"] = {**ScoringConfig().scorecard_weights, **s.scorecard_weights}
        scoring = ScoringConfig(**scoring_kwargs)
        n = model.normalise
        providers = dict(Normalisation().email_providers)
        providers.update({d: EmailRule(r.dots, r.plus, r.canonical_domain) for d, r in (n.email_providers or {}).items()})
        normalise = Normalisation(default_region=n.default_region, ip_prefix=bool(n.ip_prefix), email_providers=providers)
    except (ParameterError, ConfigError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    labels = {**DEFAULT_LABEL_MAP, **(model.labels or {})}
    svc = model.service.model_dump(exclude_none=True)
    if "api_keys" in svc:
        svc["api_keys"] = tuple(svc["api_keys"])
    service = ServiceConfig(**svc)
    return Settings(graph=graph, scoring=scoring, label_map=labels, config_key=model.pseudonym_key, source=path, service=service, fairness_segment=model.fairness.segment, normalise=normalise)


def _policy(s: _ScoringModel) -> DecisionPolicy:
    """The configured decision policy: ``[scoring] policy`` among the shipped ones and
    ``[scoring.policies.NAME]``, with ``graph_evidence`` and ``human_review`` overriding it."""
    extra = {
        name: DecisionPolicy(name, tuple(p.credit_features), p.graph_evidence, p.human_review, p.description)
        for name, p in (s.policies or {}).items()
    }
    policy = policy_named(s.policy or "default", extra=extra)
    changes: dict[str, Any] = {}
    if s.graph_evidence is not None:
        changes["graph_evidence"] = s.graph_evidence
    if s.human_review is not None:
        changes["human_review"] = s.human_review
    return replace(policy, **changes) if changes else policy


def resolve_key(settings: Settings, workspace: str | Path) -> tuple[bytes, str | None]:
    """The pseudonymisation key, and a notice when one was generated.

    Order: ``SOCIALRISK_PSEUDONYM_KEY``, then ``pseudonym_key`` in the config, then the
    workspace's own key file, created (readable by the owner only) on first use.
    """
    env = os.environ.get(ENV_KEY)
    if env:
        return parse_key(env), None
    if settings.config_key:
        return parse_key(settings.config_key), None
    path = Path(workspace) / KEY_FILE
    if path.exists():
        return parse_key(path.read_text()), None
    path.parent.mkdir(parents=True, exist_ok=True)
    key = new_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    notice = (
        f"No pseudonymisation key was configured: generated one in {path} (fingerprint "
        f"{key_fingerprint(key.encode())}). Keep it secret and back it up; set {ENV_KEY} to use your own."
    )
    return parse_key(key), notice


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict) or hasattr(value, "items"):
        return {str(k): _jsonable(v) for k, v in dict(value).items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return {f: _jsonable(getattr(value, f)) for f in value.__dataclass_fields__}
    return value
