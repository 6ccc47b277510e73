"""How the stored tables become a weighted graph: kinds, directions, weights, damping, decay."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from loaders.errors import ParameterError

__all__ = ["RelationKind", "GraphConfig", "Direction", "WeightTransform"]

Direction = Literal["both", "forward", "backward"]
WeightTransform = Literal["log1p", "linear", "unit"]


@dataclass(frozen=True)
class RelationKind:
    """How one relation kind enters propagation.

    Attributes
    ----------
    weight : float
        Multiplier of the edge weight (0 leaves the kind out of propagation).
    direction : {"both", "forward", "backward"}
        Which way risk flows: ``forward`` from ``src`` to ``dst`` (a transfer received from a
        fraudster), ``backward`` from ``dst`` to ``src``, ``both`` either way.
    """

    weight: float = 1.0
    direction: Direction = "both"

    def __post_init__(self) -> None:
        if not self.weight >= 0:
            raise ParameterError(f"The 'weight' of a relation kind must be >= 0. Got {self.weight!r} instead.")
        if self.direction not in ("both", "forward", "backward"):
            raise ParameterError(
                f"The 'direction' of a relation kind must be one of both, forward, backward. Got {self.direction!r} instead."
            )


def _frozen(mapping: Mapping[str, object]) -> Mapping[str, object]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class GraphConfig:
    """Projection settings.

    Attributes
    ----------
    link_weights : mapping
        Weight of a shared identifier by kind. A device or card shared with someone is
        stronger evidence than an IP address.
    default_link_weight : float
        Weight of identifier kinds not named in ``link_weights``.
    relation_kinds : mapping of str to RelationKind
        Weight and direction per relation kind; unnamed kinds use ``default_relation``.
    default_relation : RelationKind
        For relation kinds not named.
    weight_transform : {"log1p", "linear", "unit"}
        Applied to ``|weight|`` of relations: ``log1p`` keeps one huge transfer from drowning
        every other edge; ``unit`` ignores the magnitude.
    hub_exponent : float
        Hub damping: a user steps to an identifier shared by ``d`` users with weight
        proportional to ``d ** -hub_exponent`` (0 = no damping). A public Wi-Fi IP shared by
        thousands then carries almost no risk, a device shared by two carries most.
    hub_exponents : mapping of str to float
        Hub damping of some identifier kinds, by kind, instead of ``hub_exponent`` (an IP
        address shared by ten users says less than an email shared by ten: it may be damped
        harder). Kinds not named use ``hub_exponent``; empty by default.
    hub_max_degree : int or None
        Identifiers shared by more users than this are left out of propagation entirely
        (kept in the store and in features). ``None`` keeps all.
    half_life_days : float or None
        Time decay: a relation or link last seen ``h`` days before the newest time in the
        data counts ``0.5 ** (h / half_life_days)``. ``None`` disables decay.
    dispute_weights : mapping of str to float
        What is left of a link an analyst disputed, by the dispute's reason: 0 ignores the
        link in propagation (it stays in the store, marked), 1 keeps it whole. Reasons not
        named here are refused when a link is disputed.
    """

    link_weights: Mapping[str, float] = field(
        default_factory=lambda: _frozen(
            {"device": 1.0, "phone": 1.0, "card": 1.0, "account": 1.0, "email": 0.8, "address": 0.5, "ip": 0.5, "ip_prefix": 0.25}
        )  # type: ignore[arg-type]
    )
    default_link_weight: float = 0.5
    relation_kinds: Mapping[str, RelationKind] = field(
        default_factory=lambda: _frozen(
            {
                "transfer": RelationKind(1.0, "both"),
                "contact": RelationKind(0.5, "both"),
                "rating": RelationKind(1.0, "forward"),
            }
        )  # type: ignore[arg-type]
    )
    default_relation: RelationKind = RelationKind(1.0, "both")
    weight_transform: WeightTransform = "log1p"
    hub_exponent: float = 1.0
    hub_exponents: Mapping[str, float] = field(default_factory=lambda: _frozen({}))  # type: ignore[arg-type]
    hub_max_degree: int | None = 10_000
    half_life_days: float | None = None
    dispute_weights: Mapping[str, float] = field(
        default_factory=lambda: _frozen(
            {"stolen_device": 0.0, "public_terminal": 0.0, "family_member": 0.25, "shared_household": 0.25, "other": 0.5}
        )  # type: ignore[arg-type]
    )

    def __post_init__(self) -> None:
        for reason, w in self.dispute_weights.items():
            if not 0 <= w <= 1:
                raise ParameterError(f"The dispute weight of reason {reason!r} must be in [0, 1]. Got {w!r} instead.")
        for kind, w in self.link_weights.items():
            if not w >= 0:
                raise ParameterError(f"The link weight of kind {kind!r} must be >= 0. Got {w!r} instead.")
        if self.weight_transform not in ("log1p", "linear", "unit"):
            raise ParameterError(
                f"The 'weight_transform' parameter must be one of log1p, linear, unit. Got {self.weight_transform!r} instead."
            )
        if not self.hub_exponent >= 0:
            raise ParameterError(f"The 'hub_exponent' parameter must be >= 0. Got {self.hub_exponent!r} instead.")
        for kind, h in self.hub_exponents.items():
            if not h >= 0:
                raise ParameterError(f"The hub exponent of kind {kind!r} must be >= 0. Got {h!r} instead.")
        if self.hub_max_degree is not None and self.hub_max_degree < 2:
            raise ParameterError(f"The 'hub_max_degree' parameter must be >= 2 or None. Got {self.hub_max_degree!r} instead.")
        if self.half_life_days is not None and not self.half_life_days > 0:
            raise ParameterError(f"The 'half_life_days' parameter must be > 0 or None. Got {self.half_life_days!r} instead.")

    def dispute_weight(self, reason: str) -> float:
        """What is left of a link disputed for ``reason``; an unknown reason is an error."""
        if reason not in self.dispute_weights:
            raise ParameterError(f"Unknown dispute reason {reason!r}; expected one of {', '.join(sorted(self.dispute_weights))}.")
        return float(self.dispute_weights[reason])

    def hub_exponent_of(self, kind: str) -> float:
        """The hub damping exponent of identifiers of ``kind``."""
        return float(self.hub_exponents.get(kind, self.hub_exponent))

    def link_weight(self, kind: str) -> float:
        return float(self.link_weights.get(kind, self.default_link_weight))

    def relation(self, kind: str) -> RelationKind:
        return self.relation_kinds.get(kind, self.default_relation)
