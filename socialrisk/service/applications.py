"""The applicants' desk: applications scored against the live graph, and account events
(users, links, relations) that keep the graph current between full scorings.

- A what-if (``commit: false``) places the applicant in the live graph, reads its score and
  takes it out again: nothing is stored and the graph is as before.
- A committed application, or a batch of events, is appended to
  ``<workspace>/service/events.jsonl`` and synced before the answer; it is then placed in the
  live graph for good (the fraud exposure of the users its edges reach moves, by the rule the
  service applies to flags), its applicant is served by ``enrich`` at once, and the runtime's
  writer thread writes it to the store in acceptance order, behind the flags before it.
  Identifier values never reach the journal: it holds the pseudonymised canonical rows.
- A service that stops or dies with events not yet written replays them from the journal:
  into the live graph when the graph is read, into the store by the writer; the rows are keyed
  by content (and every row carries its acceptance time), so a replay adds nothing twice.
"""

from __future__ import annotations

import collections
import logging
import threading
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from graph.explain import explain_placed, ident_label
from graph.live import LiveFull, LiveGraph
from graph.store import GraphStore
from loaders.errors import DataError, NotFoundError, ParameterError
from loaders.schema import Tables, empty_tables
from scoring.application import Application, ApplicantScorer, canonical_frames
from scoring.features import flag_vectors, user_columns
from scoring.pipeline import Combination
from socialrisk.service.errors import Unavailable
from socialrisk.service.incremental import exposure_shift
from socialrisk.service.journal import FlagJournal
from socialrisk.service.requests import current_request_id
from socialrisk.service.scores import FlagEvent
from socialrisk.settings import Settings, resolve_key

__all__ = ["ApplicationDesk"]

log = logging.getLogger("socialrisk.service")

#: Answers of committed applications kept for their idempotency keys.
KEEP_ANSWERS = 10_000


class ApplicationDesk:
    """Applications and events for one service.

    Parameters
    ----------
    settings : Settings
    workspace : path
    folder : path
        The service's folder (``<workspace>/service``).
    """

    def __init__(self, settings: Settings, workspace: str | Path, folder: Path) -> None:
        self.settings = settings
        self.workspace = Path(workspace)
        self.journal = FlagJournal(folder / "events.jsonl", id_field="event_id")
        self.key, _ = resolve_key(settings, workspace)
        self.scorer: ApplicantScorer | None = None
        self.served: dict[str, dict[str, Any]] = {}
        self.answers: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        self.lock = threading.RLock()
        self.pending = 0
        self.recent: list[tuple[int, dict[str, Any]]] = []  # written events and the snapshot after
        self.erased: frozenset[str] = frozenset()

    # -- the live graph -------------------------------------------------------------------------

    def prepare(self, graph: Any, combination: Combination | None, *, erased: frozenset[str] = frozenset()) -> ApplicantScorer:
        """The live graph of a graph view just read (seconds on a million users: the solves).
        ``erased``: users erased from the store, never scored or served again."""
        self.erased = frozenset(erased)
        s = self.settings
        projection, tables = graph.projection, graph.tables
        flags = flag_vectors(tables.flags, projection)
        live = LiveGraph(tables, projection, config=s.graph, fraud=flags.fraud, benign=flags.benign, alpha=s.scoring.alpha,
                         tol=s.scoring.tol, capacity=s.service.live_capacity)
        if combination is None:
            combination = Combination("scorecard", (), scorecard_weights=dict(s.scoring.scorecard_weights))
        return ApplicantScorer(live, user_columns(tables, projection), combination=combination, config=s.scoring)

    def install(self, scorer: ApplicantScorer, *, read_at: int) -> None:
        """Serve applicants from ``scorer`` (prepared from a view read at store snapshot
        ``read_at``), with the events it does not hold placed again: those still in the
        journal and those written after ``read_at``. Called with the runtime's write lock."""
        with self.lock:
            again = [r for snap, r in self.recent if snap > read_at] + self.journal.pending()
            seen: set[str] = set()
            for record in again:
                if record["event_id"] in seen:
                    continue
                seen.add(record["event_id"])
                try:
                    self._place(scorer, record, graph=None, table=None, stored=None)
                except (DataError, ParameterError, NotFoundError) as exc:
                    log.error("a journaled event could not be placed in the live graph again: %s", exc)
            self.recent = [(snap, r) for snap, r in self.recent if snap > read_at]
            self.scorer = scorer

    def build(self, graph: Any, combination: Combination | None, *, erased: frozenset[str] = frozenset()) -> None:
        """:meth:`prepare` then :meth:`install` (no write may run in between)."""
        self.install(self.prepare(graph, combination, erased=erased), read_at=int(graph.snapshot))

    def need(self) -> ApplicantScorer:
        scorer = self.scorer
        if scorer is None:
            raise Unavailable("the live graph is not in memory yet; retry shortly", retry_after=5)
        return scorer

    # -- applications -----------------------------------------------------------------------------

    def application(self, body: dict[str, Any], *, runtime: Any, idempotency_key: str | None, actor: str) -> dict[str, Any]:
        """Score an application; with ``commit``, journal it and keep it (see the module)."""
        scorer = self.need()
        commit = bool(body.get("commit"))
        if commit and idempotency_key and idempotency_key in self.answers:
            return self.answers[idempotency_key]
        user_id = str(body["user_id"])
        named = {user_id} | {str(r["user_id"]) for r in body.get("relations") or []}
        if named & self.erased:
            raise ParameterError(f"{len(named & self.erased)} user(s) of this application were erased ('socialrisk forget'): "
                                 "an erased user is not scored or loaded again")
        live = scorer.live
        created: list[str] = []
        relations = list(body.get("relations") or [])
        missing = sorted({str(r["user_id"]) for r in relations if str(r["user_id"]) != user_id and not live.knows(str(r["user_id"]))})
        if missing and not body.get("create_missing"):
            raise ParameterError(f"relations name {len(missing)} user(s) the service does not know: "
                                 f"{', '.join(repr(m) for m in missing[:50])}{' ...' if len(missing) > 50 else ''}; "
                                 "send create_missing: true to create them")
        app = Application(user_id=user_id, features=dict(body.get("features") or {}), links=list(body.get("links") or []),
                          relations=[r for r in relations if str(r["user_id"]) not in missing])
        links, rels = canonical_frames(app, key=self.key, source="application", normalisation=self.settings.normalise)
        table = runtime.table
        stale = runtime.stale
        if not commit:
            if missing:  # a what-if cannot create users: it scores without those relations
                created = []
            out = scorer.score(app, links=links, relations=rels, commit=False, explain=self._explainer(runtime),
                               recourse=bool(body.get("recourse")), ident_label=ident_label)
            return self._answer(out, runtime, event_id=None, moved=0, stale=stale, created=created, missing=missing)
        event_id = uuid.uuid4().hex
        now = pd.Timestamp.now(tz="UTC")
        links = links.assign(first_seen=links["first_seen"].fillna(now), last_seen=links["last_seen"].fillna(now))
        rels = rels.assign(ts=rels["ts"].fillna(now))
        record = {
            "event_id": event_id, "kind": "application", "actor": actor, "request_id": current_request_id(), "accepted_at": now.isoformat(),
            "users": [{"user_id": user_id, **_plain_features(app.features, scorer)}] + [{"user_id": m} for m in missing],
            "links": _records(links), "relations": _records(_relations_for_missing(rels, missing, user_id, relations, self.key)),
        }
        with self.lock:
            self._check_room(scorer, 1 + len(missing))
            self.journal.accept(record)
            out, moved = self._place(scorer, record, graph=runtime.graph, table=table, stored=None, runtime=runtime,
                                     recourse=bool(body.get("recourse")))
            answer = self._answer(out, runtime, event_id=event_id, moved=moved, stale=stale, created=missing, missing=[])
            self.served[user_id] = {**answer_score(answer), "snapshot": answer["snapshot"]}
            self.pending += 1
            runtime.enqueue_event(record)
            if idempotency_key:
                self.answers[idempotency_key] = answer
                while len(self.answers) > KEEP_ANSWERS:
                    self.answers.popitem(last=False)
        return answer

    def events(self, body: dict[str, Any], *, runtime: Any, actor: str) -> dict[str, Any]:
        """A batch of users, links and relations for existing or new users, journaled and placed
        user by user (each user's links and the relations it starts), then written by the writer."""
        scorer = self.need()
        live = scorer.live
        users = {str(u["user_id"]): dict(u.get("features") or {}) for u in body.get("users") or []}
        links = list(body.get("links") or [])
        rels = list(body.get("relations") or [])
        named = set(users) | {str(x["user_id"]) for x in links} | {str(r["src"]) for r in rels} | {str(r["dst"]) for r in rels}
        if named & self.erased:
            raise ParameterError(f"{len(named & self.erased)} user(s) of these events were erased ('socialrisk forget'): "
                                 "an erased user is not loaded again")
        unknown = sorted(u for u in named if not live.knows(u) and u not in users)
        if unknown and not body.get("create_missing"):
            raise ParameterError(f"events name {len(unknown)} user(s) the service does not know and the batch does not create: "
                                 f"{', '.join(repr(m) for m in unknown[:50])}; list them in users, or send create_missing: true")
        for u in unknown:
            users.setdefault(u, {})
        # one application per user: its features, its links, and the relations it is the source of
        by_user: dict[str, dict[str, Any]] = {u: {"features": f, "links": [], "relations": []} for u, f in users.items()}
        for x in links:
            by_user.setdefault(str(x["user_id"]), {"features": {}, "links": [], "relations": []})["links"].append(
                {k: v for k, v in x.items() if k != "user_id"})
        for r in rels:
            by_user.setdefault(str(r["src"]), {"features": {}, "links": [], "relations": []})["relations"].append(
                {"user_id": str(r["dst"]), "kind": r["kind"], "direction": "out", "weight": r.get("weight"), "ts": r.get("ts")})
        # new users first, bare (so that relations between them resolve), then every user's links and relations
        fresh = [u for u in by_user if not live.knows(u)]
        steps = [(u, True) for u in fresh] + [(u, False) for u in by_user if by_user[u]["links"] or by_user[u]["relations"] or u not in fresh]
        ids, moved_total = [], 0
        with self.lock:
            self._check_room(scorer, len(fresh))
            now = pd.Timestamp.now(tz="UTC")
            prepared = []
            for u, bare in steps:  # every row validated before anything is journaled
                part = by_user[u]
                app = Application(user_id=u, features=part["features"] if bare or u not in fresh else {},
                                  links=[] if bare else part["links"], relations=[])
                lf, _ = canonical_frames(app, key=self.key, source="events", normalisation=self.settings.normalise)
                rf = empty_tables().relations
                if not bare and part["relations"]:
                    _, rf = canonical_frames(Application(user_id=u, relations=part["relations"]), key=self.key, source="events")
                prepared.append((u, app, lf, rf))
            for u, app, lf, rf in prepared:
                event_id = uuid.uuid4().hex
                lf2 = lf.assign(first_seen=lf["first_seen"].fillna(now), last_seen=lf["last_seen"].fillna(now))
                rf2 = rf.assign(ts=rf["ts"].fillna(now))
                record = {"event_id": event_id, "kind": "events", "actor": actor, "request_id": current_request_id(), "accepted_at": now.isoformat(),
                          "users": [{"user_id": u, **_plain_features(app.features, scorer)}], "links": _records(lf2), "relations": _records(rf2)}
                self.journal.accept(record)
                out, moved = self._place(scorer, record, graph=runtime.graph, table=runtime.table, stored=None, runtime=runtime)
                if out.new or u in self.served or u in fresh:
                    self.served[u] = {**answer_score(self._answer(out, runtime, event_id=event_id, moved=moved, stale=runtime.stale, created=[],
                                                                   missing=[], explain=False)), "snapshot": int(runtime.graph.snapshot if runtime.graph else 0)}
                self.pending += 1
                runtime.enqueue_event(record)
                ids.append(event_id)
                moved_total += moved
        return {"event_ids": ids, "users": len(users), "links": len(links), "relations": len(rels), "users_moved": moved_total,
                "pending_events": self.pending}

    def unscored(self, user_id: str, runtime: Any, *, again: bool = False) -> dict[str, Any] | None:
        """The score of a user the live graph holds but no scoring has scored yet (committed
        before a restart, or loaded since the last scoring): placed as it is, scored, kept.
        ``again``: scored anew (its own flag changed)."""
        scorer = self.scorer
        if scorer is None or user_id in self.erased or not scorer.live.knows(user_id):
            return None
        with self.lock:
            if user_id in self.served and not again:
                return self.served[user_id]
            app = Application(user_id=user_id)
            lf, rf = canonical_frames(app, key=self.key)
            out = scorer.score(app, links=lf, relations=rf, commit=False)
            score = {**answer_score(self._answer(out, runtime, event_id=None, moved=0, stale=runtime.stale, created=[], missing=[],
                                                 explain=False)), "snapshot": int(runtime.graph.snapshot if runtime.graph else 0)}
            self.served[user_id] = score
            return score

    # -- placing ----------------------------------------------------------------------------------

    def _check_room(self, scorer: ApplicantScorer, new_users: int) -> None:
        live = scorer.live
        if len(live.added_users) + new_users > live.capacity:
            raise Unavailable(f"the live graph holds {len(live.added_users):,} added users, its configured capacity "
                              f"(service.live_capacity = {live.capacity:,}); the next full scoring makes room", retry_after=60)

    def _place(self, scorer: ApplicantScorer, record: dict[str, Any], *, graph: Any, table: Any, stored: set[str] | None,
               runtime: Any = None, recourse: bool = False) -> tuple[Any, int]:
        """Commit one journaled event to the live graph; move the served scores its edges reach."""
        users = record["users"]
        tables = _tables([], record["links"], record["relations"])
        links, rels = tables.links, tables.relations
        out = None
        for u in users[1:]:  # users created for relations: bare
            if not scorer.live.knows(u["user_id"]):
                bare = Application(user_id=u["user_id"])
                lf, rf = canonical_frames(bare, key=self.key, normalisation=self.settings.normalise)
                scorer.score(bare, links=lf, relations=rf, commit=True)
        main = users[0]
        features = {k: v for k, v in main.items() if k != "user_id"}
        app = Application(user_id=main["user_id"], features=features)
        try:
            out = scorer.score(app, links=links, relations=rels, commit=True, explain=self._explainer(runtime) if runtime is not None else None,
                               recourse=recourse, ident_label=ident_label)
        except LiveFull as exc:
                raise Unavailable(str(exc), retry_after=60) from None
        moved = 0
        if scorer.live.needs_resolve():
            # the residuals of the commits bound the exposure's error: solved again beside the requests
            threading.Thread(target=scorer.live.resolve, name="socialrisk-live-resolve", daemon=True).start()
        if runtime is not None and graph is not None and table is not None and len(out.placement.moved[0]):
            nodes, delta = out.placement.moved
            state = scorer.live.states.get(("all", "fraud"))
            if state is not None:
                after = state.p[nodes]
                shift = exposure_shift(graph.graph_map, after - delta, after)
                felt = shift != 0
                ids = scorer.live.user_ids_at(nodes[felt]) if felt.any() else np.zeros(0, dtype=object)
                event = FlagEvent(flag_id=record["event_id"], user_id="", label="", severity=0.0, moved=ids, shift=shift[felt],
                                  cleared_risk=float("nan"))
                changes = runtime.apply_event(event)
                moved = len(changes)
        return out, moved

    def _answer(self, out: Any, runtime: Any, *, event_id: str | None, moved: int, stale: bool, created: list[str],
                missing: list[str], explain: bool = True) -> dict[str, Any]:
        graph = runtime.graph
        explanation = (out.explanation or []) if explain else []
        table = runtime.table
        return {
            **out.row, "explanation": explanation, "new": bool(out.new), "committed": bool(out.committed), "event_id": event_id,
            "model_version": table.meta.get("model_version") if table is not None else None,
            "snapshot": int(graph.snapshot) if graph is not None else 0, "pending_events": int(self.pending), "stale": bool(stale),
            "users_moved": int(moved), "ignored_features": list(out.ignored_features), "created": list(created),
            "updated": False, "neutral": False, "recourse": out.recourse.to_dict() if out.recourse is not None else None,
        }

    def recourse(self, user_id: str, *, runtime: Any) -> dict[str, Any]:
        """A known user's recourse, on its features in the live graph with the current model
        (a what-if with nothing added: the graph is left as it was)."""
        scorer = self.need()
        if user_id in self.erased or not scorer.live.knows(user_id):
            raise NotFoundError(f"unknown user {user_id!r}: not in the live graph")
        app = Application(user_id=user_id)
        links, rels = canonical_frames(app, key=self.key, source="recourse", normalisation=self.settings.normalise)
        out = scorer.score(app, links=links, relations=rels, commit=False, recourse=True, ident_label=ident_label)
        if out.recourse is None:
            raise ParameterError(f"User {user_id!r} is approved (credit score {out.row['credit_score']}): recourse is for refused or reviewed users.")
        table, graph = runtime.table, runtime.graph
        return {
            **out.recourse.to_dict(), "model_version": table.meta.get("model_version") if table is not None else None,
            "snapshot": int(graph.snapshot) if graph is not None else 0, "pending_events": int(self.pending), "stale": bool(runtime.stale),
        }

    def _explainer(self, runtime: Any) -> Any:
        graph, scorer = runtime.graph, self.scorer
        if graph is None or scorer is None:
            return None
        live = scorer.live

        def explain(placed: Any) -> list[dict[str, Any]]:
            try:
                return explain_placed(graph.explainer, live.user_ids_at([placed.node])[0], placed.in_edges, placed.node, node_users=live.node_users,
                                      state=live.states.get(("all", "fraud")), top=5)
            except (ParameterError, NotFoundError, IndexError) as exc:  # an explanation is a help, not the answer
                log.warning("no explanation for an applicant: %s", exc)
                return []

        return explain

    # -- the writer's side --------------------------------------------------------------------------

    def write(self, store: GraphStore, records: list[dict[str, Any]]) -> None:
        """Write journaled events to the store (the writer thread, in acceptance order)."""
        users, links, rels = [], [], []
        for r in records:
            users += r["users"]
            links += r["links"]
            rels += r["relations"]
        tables = _tables(users, links, rels)
        store.write_tables(tables)

    def written(self, records: list[dict[str, Any]], snapshot: int) -> None:
        self.journal.done([r["event_id"] for r in records], snapshot)
        with self.lock:
            self.pending = max(0, self.pending - len(records))
            # kept until a view read after them is installed (bounded: a view is read every few writes)
            self.recent = (self.recent + [(snapshot, r) for r in records])[-100_000:]

    def forget_scored(self, table: Any) -> None:
        """A new scoring was loaded: applicants it scored are served from it."""
        with self.lock:
            for u in [u for u in self.served if u in table.index]:
                del self.served[u]


def answer_score(answer: dict[str, Any]) -> dict[str, Any]:
    """The served score of an applicant (``enrich``'s fields) from its answer."""
    keep = ("user_id", "risk", "graph_risk", "credit_score", "decision", "dimensions", "reasons", "reason_codes", "flag", "ring_id",
            "model_version", "snapshot", "stale", "fraud_risk", "credit_risk", "fraud_decision", "credit_decision", "principal_reasons",
            "principal_reason_codes", "decision_basis", "review_route", "policy")
    return {k: answer[k] for k in keep if k in answer} | {"updated": True, "neutral": False}


def _plain_features(features: dict[str, Any], scorer: ApplicantScorer) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for k, v in features.items():
        if k in scorer.columns:
            out[k] = None if v is None else float(v)
    return out


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    out = []
    for rec in frame.to_dict(orient="records"):
        out.append({k: (None if v is None or (isinstance(v, float) and v != v) or v is pd.NaT else
                        (v.isoformat() if isinstance(v, pd.Timestamp) else v)) for k, v in rec.items()})
    return out


def _frame(records: list[dict[str, Any]], times: tuple[str, ...]) -> pd.DataFrame:
    frame = pd.DataFrame(records)
    for c in times:
        if c in frame:
            frame[c] = pd.to_datetime(frame[c], utc=True)
    if "weight" in frame:
        frame["weight"] = pd.to_numeric(frame["weight"], errors="coerce").astype("float64")
    return frame


def _relations_for_missing(rels: pd.DataFrame, missing: list[str], user_id: str, relations: list[dict[str, Any]], key: bytes) -> pd.DataFrame:
    """The relations to users created now, validated as the others."""
    if not missing:
        return rels
    extra = Application(user_id=user_id, relations=[r for r in relations if str(r["user_id"]) in missing])
    _, more = canonical_frames(extra, key=key)
    now = pd.Timestamp.now(tz="UTC")
    return pd.concat([rels, more.assign(ts=more["ts"].fillna(now))], ignore_index=True)


def _tables(users: list[dict[str, Any]], links: list[dict[str, Any]], rels: list[dict[str, Any]]) -> Tables:
    empty = empty_tables()
    u = pd.DataFrame(users) if users else empty.users
    u["user_id"] = u["user_id"].astype(str)
    for c in u.columns:
        if c != "user_id":
            u[c] = pd.to_numeric(u[c], errors="coerce").astype("float64")
    lk = _frame(links, ("first_seen", "last_seen")) if links else empty.links
    if links:
        lk = lk[list(empty.links.columns)].astype({"user_id": str, "kind": str, "ident": "string"})
    rl = _frame(rels, ("ts",)) if rels else empty.relations
    if rels:
        rl = rl.astype({"src": str, "dst": str, "kind": str})
    return Tables(users=u, links=lk, relations=rl, flags=empty.flags)
