from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from graph import GraphConfig, RelationKind, project, walk_matrix, walk_transition
from graph.store.base import wait_for_kept_projection
from loaders import read_tables
from loaders.errors import ParameterError
from tests.conftest import KEY, tiny_frames


def _proj(config: GraphConfig | None = None, frames: dict[str, pd.DataFrame] | None = None):  # type: ignore[no-untyped-def]
    return project(read_tables(frames or tiny_frames(), key=KEY), config or GraphConfig())


def test_only_shared_identifiers_become_nodes() -> None:
    p = _proj()
    # DEV-1 (f1, a) and the IP (f1, b, c, g) are shared; a's phone is private
    assert p.n_idents == 2
    assert sorted(p.ident_degree.tolist()) == [2, 4]
    kinds = sorted(p.ident_kinds[k] for k in p.ident_kind)
    assert kinds == ["device", "ip"]


def test_hub_limit_drops_identifiers_shared_by_too_many() -> None:
    p = _proj(GraphConfig(hub_max_degree=3))
    assert p.n_idents == 1 and p.ident_degree.tolist() == [2]


def test_link_weights_by_kind() -> None:
    p = _proj()
    a, f1 = p.index_of(["a", "f1"])
    dev = int(np.flatnonzero(np.array([p.ident_kinds[k] for k in p.ident_kind]) == "device")[0])
    assert p.incidence[a, dev] == 1.0  # device weight 1
    ip = 1 - dev
    assert p.incidence[f1, ip] == 0.5  # ip weight 0.5


def test_relations_signs_and_directions() -> None:
    p = _proj()
    a, b, c, g = p.index_of(["a", "b", "c", "g"])
    assert p.relations_pos[b, a] == np.log1p(120.0)
    assert p.relations_neg[c, a] == np.log1p(5.0)
    # a negative rating is evidence, not a path: it is not in the walk
    assert p.relations_walk[c, a] == 0 and p.relations_walk[a, c] == 0
    # transfer flows both ways by default, contact too (weight 0.5)
    assert p.relations_walk[b, a] == p.relations_walk[a, b] == np.log1p(120.0)
    assert p.relations_walk[g, c] == 0.5 * np.log1p(1.0)
    forward = _proj(GraphConfig(relation_kinds={"transfer": RelationKind(2.0, "forward")}))
    assert forward.relations_walk[b, a] == 2.0 * np.log1p(120.0) and forward.relations_walk[a, b] == 0


def test_self_relations_are_kept_out_of_the_walk() -> None:
    frames = tiny_frames()
    frames["relations"] = pd.concat([frames["relations"], pd.DataFrame({"src": ["a"], "dst": ["a"], "kind": ["transfer"], "weight": [9.0]})])
    p = _proj(frames=frames)
    a = p.index_of(["a"])[0]
    assert p.n_self_relations == 1 and p.relations_walk[a, a] == 0


def test_time_decay_halves_weight_per_half_life() -> None:
    frames = tiny_frames()
    frames["relations"]["ts"] = ["2026-01-01", "2026-01-01", "2026-01-31"]
    del frames["links"]  # the newest time in the data (the decay reference) is then 2026-01-31
    p = _proj(GraphConfig(half_life_days=30.0, weight_transform="unit"), frames)
    a, b, c, g = p.index_of(["a", "b", "c", "g"])
    assert np.isclose(p.relations_walk[b, a], 0.5)
    assert np.isclose(p.relations_walk[g, c], 0.5)  # contact weight 0.5, no decay: newest


def test_walk_matrix_hub_damping() -> None:
    p = _proj()
    n = p.n_users
    A = walk_matrix(p, hub_exponent=1.0)
    f1 = p.index_of(["f1"])[0]
    degrees = dict(zip(range(p.n_idents), p.ident_degree))
    for j, d in degrees.items():
        weight = p.incidence[f1, j]
        assert np.isclose(A[f1, n + j], weight / d)  # user -> identifier damped by degree
        assert np.isclose(A[n + j, f1], weight)  # identifier -> user not damped
    undamped = walk_matrix(p, hub_exponent=0.0)
    assert np.allclose(undamped[:n, n:].toarray(), p.incidence.toarray())


def test_hub_damping_per_kind() -> None:
    p = _proj()
    n = p.n_users
    f1 = p.index_of(["f1"])[0]
    kind = {j: p.ident_kinds[p.ident_kind[j]] for j in range(p.n_idents)}
    # the IP (4 users) damped by 4^-2, the device (2 users) by the global 2^-1
    A = walk_matrix(p, hub_exponent=1.0, hub_exponents={"ip": 2.0})
    for j, d in zip(range(p.n_idents), p.ident_degree):
        assert np.isclose(A[f1, n + j], p.incidence[f1, j] * float(d) ** (-2.0 if kind[j] == "ip" else -1.0))
    # naming every kind with the global exponent, or none, is the one damping
    same = walk_matrix(p, hub_exponent=1.0, hub_exponents={"ip": 1.0, "device": 1.0, "phone": 1.0})
    assert np.array_equal(same.toarray(), walk_matrix(p, hub_exponent=1.0).toarray())
    PT, _ = walk_transition(p, hub_exponent=1.0, hub_exponents={"ip": 2.0})
    W = A.toarray()
    P = np.divide(W, W.sum(axis=1, keepdims=True), out=np.zeros_like(W), where=W.sum(axis=1, keepdims=True) > 0)
    assert np.allclose(PT.toarray(), P.T)


def test_hub_exponent_per_kind_is_checked() -> None:
    assert GraphConfig(hub_exponents={"ip": 1.5}).hub_exponent_of("ip") == 1.5
    assert GraphConfig(hub_exponents={"ip": 1.5}).hub_exponent_of("email") == 1.0
    with pytest.raises(ParameterError, match="'ip'"):
        GraphConfig(hub_exponents={"ip": -1.0})


def _mapped(a: np.ndarray) -> bool:
    """Whether ``a`` is a view of a memory-mapped file."""
    import mmap

    while a is not None:
        if isinstance(a, mmap.mmap):
            return True
        a = getattr(a, "base", None)
    return False


@pytest.mark.parametrize("mapped", [False, True])
def test_saved_projection_reads_back_equal(tmp_path, monkeypatch, mapped: bool) -> None:  # type: ignore[no-untyped-def]
    import graph.projection as gp

    if mapped:  # map every array with data, as a large graph's are
        monkeypatch.setattr(gp, "_MAP_MIN_BYTES", 128)
    p = project(read_tables(tiny_frames(), key=KEY), GraphConfig())
    p.signed.get()  # saved with the signed and count matrices (test below: without them)
    gp.save_projection(p, tmp_path / "p")
    q = gp.load_projection(tmp_path / "p")
    assert _mapped(q.relations_walk.data) == mapped
    # writes stay in the process (copy-on-write): the saved file is unchanged
    before = float(q.relations_walk.data[0])
    q.relations_walk.data[0] = -1.0
    assert float(gp.load_projection(tmp_path / "p").relations_walk.data[0]) == before
    q.relations_walk.data[0] = before
    assert q.user_ids.tolist() == p.user_ids.tolist() and q.ident_keys.tolist() == p.ident_keys.tolist()
    assert q.ident_kinds == p.ident_kinds and q.n_self_relations == p.n_self_relations
    for name in ("incidence", "relations_walk", "relations_pos", "relations_neg"):
        assert (getattr(q, name) != getattr(p, name)).nnz == 0
    assert set(q.relations_count) == set(p.relations_count)


def test_the_signed_matrices_are_built_only_when_used(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import graph.projection as gp

    tables = read_tables(tiny_frames(), key=KEY)
    p = project(tables, GraphConfig())
    walk_matrix(p)
    assert not p.signed.built  # a propagation does not build them
    gp.save_projection(p, tmp_path / "p")
    assert not p.signed.built and not (tmp_path / "p" / "relations_pos.data.npy").exists()
    # read back, they are built when asked for, by the builder given
    with pytest.raises(FileNotFoundError, match="without its signed and count matrices"):
        gp.load_projection(tmp_path / "p").relations_pos
    q = gp.load_projection(tmp_path / "p", signed=lambda: gp.signed_relations(gp.encode(tables), GraphConfig()))
    fresh = project(tables, GraphConfig())
    _same_projection(q, fresh)
    assert q.signed.built
    # once built, they are saved with the rest
    gp.save_projection(q, tmp_path / "q")
    _same_projection(gp.load_projection(tmp_path / "q"), fresh)


def test_the_embedded_store_caches_the_projection_per_snapshot_and_config(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from graph.store import EmbeddedStore
    from loaders import load

    frames = tiny_frames()
    store = EmbeddedStore(tmp_path)
    load({k: v for k, v in frames.items() if k != "flags"}, store, key=KEY)
    first = store.projection(GraphConfig())
    wait_for_kept_projection(tmp_path / "cache")  # written beside the caller, on a thread of its own
    assert len(list((tmp_path / "cache").glob("projection-*"))) == 1
    again = EmbeddedStore(tmp_path).projection(GraphConfig())
    assert again.user_ids.tolist() == first.user_ids.tolist()
    # another configuration projects afresh; a load (new snapshot) too, and the new user is there
    hubless = store.projection(GraphConfig(hub_max_degree=2))
    assert hubless.n_idents <= first.n_idents
    load({"users": pd.DataFrame({"user_id": ["newcomer"]})}, store, key=KEY)
    after = store.projection(GraphConfig())
    assert "newcomer" in after.user_ids.tolist()
    store.close()  # closing a store waits for the projection it keeps
    assert len(list((tmp_path / "cache").glob("projection-*"))) == 1  # older ones are dropped
    # a projection cut short (no 'complete' marker) is projected afresh, not read
    (kept,) = (tmp_path / "cache").glob("projection-*")
    (kept / "complete").unlink()
    (kept / "relations_walk.data.npy").write_bytes(b"cut short")
    again = EmbeddedStore(tmp_path).projection(GraphConfig())
    wait_for_kept_projection(tmp_path / "cache")
    assert (again.relations_walk != after.relations_walk).nnz == 0 and (kept / "complete").exists()


def test_a_projection_that_cannot_be_kept_is_still_returned(tmp_path, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    import graph.store.base
    from graph.store import EmbeddedStore
    from loaders import load

    store = EmbeddedStore(tmp_path)
    load(tiny_frames(), store, key=KEY)

    def full_disk(projection, path):  # type: ignore[no-untyped-def]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(graph.store.base, "save_projection", full_disk)
    p = store.projection(GraphConfig())
    wait_for_kept_projection(tmp_path / "cache")
    assert "could not be kept" in caplog.text and "No space left" in caplog.text
    assert not list((tmp_path / "cache").glob("projection-*"))
    _same_projection(p, project(read_tables(tiny_frames(), key=KEY), GraphConfig()))


def _same_projection(p, q) -> None:  # type: ignore[no-untyped-def]
    assert p.user_ids.tolist() == q.user_ids.tolist() and p.ident_keys.tolist() == q.ident_keys.tolist()
    assert p.ident_degree.tolist() == q.ident_degree.tolist() and p.n_self_relations == q.n_self_relations
    for name in ("incidence", "relations_walk", "relations_pos", "relations_neg"):
        assert (getattr(p, name) != getattr(q, name)).nnz == 0, name
    assert list(p.relations_count) == list(q.relations_count)
    for kind in p.relations_count:
        assert (p.relations_count[kind] != q.relations_count[kind]).nnz == 0


def test_sorted_csr_merges_repeats_and_keeps_only_the_masked_entries() -> None:
    import scipy.sparse as sp

    from graph._csr import sorted_csr

    # (0,1) twice, (0,2), (2,0) three times, (2,2); the mask drops one of the (2,0) entries
    rows = np.array([0, 0, 0, 2, 2, 2, 2], dtype=np.int32)
    cols = np.array([1, 1, 2, 0, 0, 0, 2], dtype=np.int32)
    values = np.array([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0])
    mask = np.array([True, True, True, True, False, True, True])
    m = sorted_csr(rows, cols, values, mask, (3, 3))
    assert m.toarray().tolist() == [[0, 3, 4], [0, 0, 0], [40, 0, 64]]
    assert m.nnz == 4 and m.indptr.tolist() == [0, 2, 2, 4]
    # random entries against scipy's own assembly
    rng = np.random.default_rng(0)
    r, c = rng.integers(0, 50, 2000), rng.integers(0, 40, 2000)
    order = np.lexsort((c, r))
    r, c, v, keep = r[order], c[order], rng.random(2000), rng.random(2000) < 0.7
    expected = sp.csr_matrix((v[keep], (r[keep], c[keep])), shape=(50, 40))
    assert abs(sorted_csr(r, c, v, keep, (50, 40)) - expected).max() < 1e-12


@pytest.mark.parametrize("parallel", [False, True])
def test_sum_with_transpose_adds_the_backward_entries_transposed(monkeypatch, parallel: bool) -> None:  # type: ignore[no-untyped-def]
    import scipy.sparse as sp

    import graph._csr
    from graph._csr import sum_with_transpose

    if parallel:  # entries cut in blocks, one per thread, as on large graphs
        monkeypatch.setattr(graph._csr, "_PARALLEL_MIN", 0)
        monkeypatch.setattr(graph._csr.numba, "get_num_threads", lambda: 3)

    # entries (0,1)=1 forward, (0,1)=2 both ways, (1,0)=4 forward, (1,2)=8 backward, (2,2)=0 both
    rows = np.array([0, 0, 1, 1, 2], dtype=np.int32)
    cols = np.array([1, 1, 0, 2, 2], dtype=np.int32)
    values = np.array([1.0, 2.0, 4.0, 8.0, 0.0])
    forward = np.array([True, True, True, False, True])
    backward = np.array([False, True, False, True, True])
    m = sum_with_transpose(rows, cols, values, forward, backward, 3)
    # F = [[0,3,0],[4,0,0],[0,0,0]]; B.T = [[0,0,0],[2,0,0],[0,8,0]]; the zero (2,2) is dropped
    assert m.toarray().tolist() == [[0, 3, 0], [6, 0, 0], [0, 8, 0]]
    assert m.nnz == 3 and m.has_sorted_indices
    # random entries, repeats and a hub row, against scipy's sum of the two projections
    rng = np.random.default_rng(1)
    r, c = rng.integers(0, 60, 3000), np.r_[rng.integers(0, 60, 2500), np.full(500, 7)]
    order = np.lexsort((c, r))
    r, c, v = r[order], c[order], rng.random(3000)
    fwd, bwd = rng.random(3000) < 0.6, rng.random(3000) < 0.5
    expected = sp.csr_matrix((v[fwd], (r[fwd], c[fwd])), shape=(60, 60)) + sp.csr_matrix((v[bwd], (c[bwd], r[bwd])), shape=(60, 60))
    got = sum_with_transpose(r, c, v, fwd, bwd, 60)
    assert abs(got - expected).max() < 1e-12
    assert all(np.all(np.diff(got.indices[a:b]) > 0) for a, b in zip(got.indptr[:-1], got.indptr[1:]))
    # the same entries both ways: equal to its transpose to the last bit, repeats and all
    both = sum_with_transpose(r, c, v, fwd, fwd, 60)
    assert (both != both.T).nnz == 0
    # rows without entries before, between and after the blocks; no entry at all
    sparse_rows = np.array([5, 5, 30, 31, 31, 58], dtype=np.int32)
    got = sum_with_transpose(sparse_rows, np.array([0, 59, 2, 3, 4, 1], dtype=np.int32), np.arange(1.0, 7.0), np.ones(6, bool), np.ones(6, bool), 60)
    expected = sp.csr_matrix((np.arange(1.0, 7.0), (sparse_rows, [0, 59, 2, 3, 4, 1])), shape=(60, 60))
    assert abs(got - (expected + expected.T)).max() == 0
    empty = np.zeros(0, dtype=np.int32)
    assert sum_with_transpose(empty, empty, np.zeros(0), np.zeros(0, bool), np.zeros(0, bool), 4).nnz == 0


@pytest.mark.parametrize("parallel", [False, True])
def test_scaled_transpose_and_block_assembly_equal_scipy(monkeypatch, parallel: bool) -> None:  # type: ignore[no-untyped-def]
    import scipy.sparse as sp

    import graph._csr
    from graph._csr import block_csr, row_sums, scaled_transpose

    if parallel:  # blocks of rows shared by the threads, as on large graphs
        monkeypatch.setattr(graph._csr, "_PARALLEL_MIN", 0)

    A = sp.csr_matrix(np.array([[0, 2.0, 0], [1.0, 0, 3.0]]))
    assert scaled_transpose(A, np.array([10.0, 1.0])).toarray().tolist() == [[0, 1], [20, 0], [0, 3]]
    assert row_sums(A).tolist() == [2.0, 4.0] and row_sums(sp.csr_matrix((3, 3))).tolist() == [0, 0, 0]
    rng = np.random.default_rng(2)
    R = sp.random(40, 40, density=0.1, format="csr", random_state=3)
    inc = sp.random(40, 7, density=0.2, format="csr", random_state=4)
    scale = rng.random(40)
    assert abs(scaled_transpose(R, scale) - (sp.diags(scale) @ R).T).max() < 1e-15
    damp = rng.random(7)
    expected = sp.bmat([[R, inc @ sp.diags(damp)], [inc.T, None]], format="csr")
    got = block_csr(R, inc, scaled_transpose(inc, np.ones(40)), right_scale=damp)
    assert got.shape == (47, 47) and abs(got - expected).max() < 1e-15 and got.has_sorted_indices
    left, rows = rng.random(40), rng.random(7)
    L = sp.diags(left)
    expected = sp.bmat([[R @ L, inc @ sp.diags(damp)], [sp.diags(rows) @ inc.T @ L, None]], format="csr")
    got = block_csr(R, inc, sp.csr_matrix(inc.T), left_scale=left, right_scale=damp, bottom_row_scale=rows)
    assert abs(got - expected).max() < 1e-15
    assert got.indptr.tolist() == expected.indptr.tolist()  # and no entry lost or added


def test_projection_from_the_integer_codes_equals_the_projection_of_the_tables() -> None:
    from graph.projection import encode, load_encoded, project_encoded, save_encoded

    tables = read_tables(tiny_frames(), key=KEY)
    for config in (GraphConfig(), GraphConfig(half_life_days=10.0, hub_max_degree=3)):
        _same_projection(project(tables, config), project_encoded(encode(tables), config))


def test_saved_codes_read_back_equal(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from graph.projection import encode, load_encoded, project_encoded, save_encoded

    import dataclasses

    encoded = encode(read_tables(tiny_frames(), key=KEY))
    save_encoded(encoded, tmp_path / "e", snapshot=7)
    again, snapshot = load_encoded(tmp_path / "e")
    assert snapshot == 7 and again.link_kinds == encoded.link_kinds and again.as_of == encoded.as_of
    _same_projection(project_encoded(encoded, GraphConfig(half_life_days=5.0)), project_encoded(again, GraphConfig(half_life_days=5.0)))
    # workspaces of earlier versions kept the codes in one .npz file: still read
    arrays = {f.name: getattr(encoded, f.name) for f in dataclasses.fields(encoded)}
    arrays.update(as_of=np.array(encoded.as_of), link_kinds=np.array(encoded.link_kinds), rel_kinds=np.array(encoded.rel_kinds),
                  snapshot=np.array(3))
    np.savez(tmp_path / "old.npz", **arrays)
    old, snapshot = load_encoded(tmp_path / "old.npz")
    assert snapshot == 3 and old.rel_kinds == encoded.rel_kinds
    _same_projection(project_encoded(encoded, GraphConfig()), project_encoded(old, GraphConfig()))


def test_the_embedded_store_keeps_integer_codes_from_load_time(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from graph.projection import load_encoded, save_encoded
    from graph.store import EmbeddedStore
    from loaders import load

    frames = tiny_frames()
    store = EmbeddedStore(tmp_path)
    load({k: v for k, v in frames.items() if k != "flags"}, store, key=KEY)
    assert load_encoded(store._encoded_path)[1] == store.metadata()["snapshot"]
    # a flags-only load keeps the codes (flags name known users: the loader refuses others)
    load({"flags": frames["flags"]}, store, key=KEY)
    kept, snapshot = load_encoded(store._encoded_path)
    assert snapshot == store.metadata()["snapshot"]
    tables = EmbeddedStore(tmp_path).read_tables()
    _same_projection(EmbeddedStore(tmp_path).projection(GraphConfig()), project(tables, GraphConfig()))
    # codes older than the tables (a crash between the two writes) are not used: encoded afresh
    load({"users": pd.DataFrame({"user_id": ["late"]})}, store, key=KEY)
    save_encoded(kept, store._encoded_path, snapshot=snapshot)  # from before 'late'
    assert "late" in EmbeddedStore(tmp_path).projection(GraphConfig()).user_ids.tolist()
    assert load_encoded(store._encoded_path)[1] == store.metadata()["snapshot"]


def test_users_named_only_by_new_flags_join_the_end_of_the_order() -> None:
    from graph.projection import encode

    encoded = encode(read_tables(tiny_frames(), key=KEY))
    more = encoded.with_users(["zz", "a", "yy", "zz"])
    assert more.user_ids.tolist() == encoded.user_ids.tolist() + ["zz", "yy"]
    assert encoded.with_users(["a"]) is encoded


def test_disputes_weight_a_link_by_reason_or_by_a_given_weight() -> None:
    from graph.projection import encode, project_encoded

    tables = read_tables(tiny_frames(), key=KEY)
    encoded = encode(tables)
    plain = project_encoded(encoded)
    a = int(plain.index_of(["a"])[0])
    device = next(k for k in plain.ident_keys.tolist() if k.startswith("device:"))
    j = plain.ident_keys.tolist().index(device)
    base = {"user_id": "a", "target": "identifier", "other": device}
    by_reason = project_encoded(encoded, disputes=pd.DataFrame([{**base, "reason": "family_member"}]))
    assert by_reason.incidence[a, j] == 0.25 * plain.incidence[a, j]
    what_if = project_encoded(encoded, disputes=pd.DataFrame([{**base, "reason": "what-if", "weight": 0.0}]))
    assert what_if.incidence[a, j] == 0.0 and what_if.incidence.nnz == plain.incidence.nnz  # kept, weighted 0
    b, c = (int(i) for i in plain.index_of(["b", "c"]))
    rel = project_encoded(encoded, disputes=pd.DataFrame([{"user_id": "a", "target": "relation", "other": "b", "reason": "stolen_device"}]))
    assert rel.relations_walk[a, b] == 0 and rel.relations_walk[b, a] == 0 and plain.relations_walk[b, a] > 0
    assert (rel.relations_neg != plain.relations_neg).nnz == 0  # a's rating from c is not the disputed link


@pytest.mark.parametrize(
    "config, layers, hub_exponent",
    [
        (GraphConfig(), {}, 1.0),
        (GraphConfig(), {"links": False}, 1.0),
        (GraphConfig(), {"relations": False}, 0.5),
        (GraphConfig(relation_kinds={"transfer": RelationKind(1.0, "forward"), "contact": RelationKind(0.5, "backward")}), {}, 1.0),
        (GraphConfig(hub_max_degree=2), {}, 1.0),  # one shared identifier left
    ],
)
def test_walk_transition_equals_the_transposed_transition_of_the_walk_matrix(config, layers, hub_exponent) -> None:  # type: ignore[no-untyped-def]
    from graph.propagation import transition_transpose

    p = _proj(config)
    assert p.walk_symmetric == (config.relation("transfer").direction == "both")
    W = walk_matrix(p, hub_exponent=hub_exponent, **layers)
    expected, expected_dangling = transition_transpose(W)
    PT, dangling = walk_transition(p, hub_exponent=hub_exponent, **layers)
    assert PT.shape == W.shape and dangling.tolist() == expected_dangling.tolist()
    assert abs(PT - expected).max() < 1e-15
    # column sums: 1 for nodes with out-edges, 0 for dangling ones
    assert np.allclose(np.asarray(PT.sum(axis=0)).ravel(), (~dangling).astype(float))
