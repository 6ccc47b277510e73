"""The HTML views and the evaluation figures, as files and as a person sees them in a browser.

The pages are built once from a generated, scored population (a dispute recorded on the
explored user, so the case file has an audit trail). The browser tests open them in Debian's
headless Chromium with networking disabled, check that they render without a console error,
fetch nothing, draw the expected number of nodes and answer a click, and save screenshots in
tests/artifacts/views/ (gitignored) for a person to look at.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from loaders.synthetic import generate, write_tables
from socialrisk import investigate, views, workflow
from socialrisk.settings import Settings
from tests._chromium import Chromium, find_chromium

ARTIFACTS = Path(__file__).resolve().parent / "artifacts" / "views"
KEY_ENV = {"SOCIALRISK_PSEUDONYM_KEY": "views-test-key-0123456789", "SOCIALRISK_ACTOR": "analyst-test"}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A scored workspace of 3,000 generated users, a refused family member explored (with a
    dispute of one of its links), and the three pages written."""
    root = tmp_path_factory.mktemp("views")
    with pytest.MonkeyPatch.context() as mp:
        for k, v in KEY_ENV.items():
            mp.setenv(k, v)
        frames = generate(n_users=3000, seed=1)  # holds family members of fraudsters that are refused
        truth = frames.pop("truth")
        write_tables(frames, root / "data")
        settings = Settings()
        ws = root / "ws"
        with workflow.open_store("embedded", ws) as store:
            workflow.load_into(store, root / "data", settings, ws)
            scores = workflow.score(store, settings, workspace=ws).scores
            refused = scores.merge(truth, on="user_id")
            refused = refused.loc[(refused["role"] == "family") & (refused["decision"] != "approve")].sort_values("risk", ascending=False)
            user = str(refused["user_id"].iloc[0])
            view = workflow.appeal_view(store, settings, ws, user, top=1)
            link = view.what_if[0]
            workflow.appeal(store, settings, ws, user, "dispute", other=link.other, target=link.target, reason="family_member", note="brother")
            exploration = investigate.explore(store, settings, user)
            summary, rings = investigate.ring_views(store, settings, kind="dense", top=4)
            case = investigate.case_file(store, settings, user)
        pages = {
            "explore": views.explore_html(exploration),
            "rings": views.rings_html(summary, rings),
            "case": views.case_html(case),
        }
        files = {name: views.write_html(root / f"{name}.html", page) for name, page in pages.items()}
    return {"root": root, "user": user, "link": link, "exploration": exploration, "rings": rings, "case": case, "pages": pages,
            "files": files, "frames": frames}


def _data_blocks(page: str) -> list[dict[str, Any]]:
    return [json.loads(m) for m in re.findall(r'<script type="application/json" id="[^"]+">(.*?)</script>', page, flags=re.S)]


def test_pages_are_self_contained(built: dict[str, Any]) -> None:
    library = views._vis_js()
    for name, page in built["pages"].items():
        assert library in page, name  # the network library is inline
        rest = page.replace(library, "")
        assert not re.search(r"<(script|link|img|iframe|embed|object|source)\b[^>]*\b(src|href)\s*=", rest, flags=re.I), name
        assert "@import" not in rest and not re.search(r"url\(\s*['\"]?(https?:)?//", rest), name
        assert not re.search(r"https?://", rest), f"{name}: no address outside the library's licence comment"
    # the vendored library itself fetches nothing either: its addresses are licence and home-page text
    assert set(re.findall(r"https?://[^\s\"')]+", library)) <= {
        "http://almende.com", "http://naver.github.io/egjs", "http://opensource.org/licenses/MIT", "http://www.apache.org/licenses/LICENSE-2.0",
        "https://github.com/visjs", "https://github.com/zloirock/core-js", "https://github.com/zloirock/core-js/blob/v3.49.0/LICENSE",
        "https://visjs.github.io/vis-network/",
    }


def test_pages_show_pseudonyms_only(built: dict[str, Any]) -> None:
    raw = set(built["frames"]["links"]["value"].astype(str))
    samples = [v for v in raw if len(v) >= 6][:400]
    for name, page in built["pages"].items():
        leaked = [v for v in samples if v in page]
        assert not leaked, f"{name} shows raw identifier values: {leaked[:3]}"
    assert re.search(r"device d-[0-9a-f]{4}", built["pages"]["explore"])


def test_explore_data_holds_the_neighbourhood_and_its_paths(built: dict[str, Any]) -> None:
    x = built["exploration"]
    (data,) = _data_blocks(built["pages"]["explore"])
    assert data["focus"] == built["user"] and len(data["nodes"]) == len(x.view.nodes) and len(data["edges"]) == len(x.view.edges)
    names = {n["id"] for n in data["nodes"]}
    assert x.explanation.contributions, "a refused family member is reached by a flagged account"
    for c in x.explanation.contributions:  # every path of the explanation is drawn whole
        assert {c.seed, built["user"]} <= names and {s.target for s in c.path} <= names
    assert any(e["on_path"] for e in data["edges"])
    assert any(e["disputed"] == "family_member" for e in data["edges"]), "the disputed link is marked"
    flagged = [n for n in data["nodes"] if n["flag"] == "fraud"]
    assert flagged and all(n["type"] == "user" for n in flagged)


def test_case_file_has_every_section(built: dict[str, Any]) -> None:
    page = built["pages"]["case"]
    for heading in ("Reason codes", "Dimension scores", "Network (2 hops", "Explanation", "disputes in force", "Timeline", "Audit trail"):
        assert heading in page, heading
    case = built["case"]
    assert [e.action for e in case.audit] == ["dispute_link", "appeal_decision"] and "analyst-test" in page
    assert len(case.timeline) and set(case.timeline["event"]) <= {"link", "relation", "flag"}
    assert case.timeline["at"].dropna().is_monotonic_increasing
    assert '<svg class="timeline"' in page and 'class="bars"' in page


def test_rings_page_draws_each_ring(built: dict[str, Any]) -> None:
    blocks = _data_blocks(built["pages"]["rings"])
    assert len(blocks) == len(built["rings"]) >= 2
    for data, ring in zip(blocks, built["rings"]):
        users = {n["id"] for n in data["nodes"] if n["type"] == "user"}
        idents = {n["id"] for n in data["nodes"] if n["type"] == "identifier"}
        assert users == set(ring.ring["members"]) and idents == set(ring.ring["identifier_keys"])


def test_evaluation_figures(tmp_path: Path) -> None:
    from scoring.evaluate import evaluate
    from socialrisk.plots import PLOTS, write_evaluation_plots
    from loaders import read_tables
    from graph import project
    from scoring import Scorer

    frames = generate(n_users=1500, seed=2)
    frames.pop("truth")
    tables = read_tables(frames, key=b"plots-test-key-0123456789")
    report = evaluate(Scorer(tables, project(tables)), repeats=2)
    p = report.predictions
    assert sorted(p["repeat"].unique()) == [0, 1] and len(p) == int(report.runs["hidden"].sum())
    assert set(p.columns) == {
        "repeat", "user_id", "y", "risk", "graph_risk", "credit_score", "decision",
        "fraud_risk", "credit_risk", "fraud_decision", "credit_decision", "decision_basis", "graph_evidence_only",
    }
    files = write_evaluation_plots(report, tmp_path / "plots", name="generated")
    assert list(files) == list(PLOTS)
    for path in files.values():
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, path
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for path in files.values():  # kept beside the screenshots, to look at
        (ARTIFACTS / f"plot-{path.name}").write_bytes(path.read_bytes())


# -- in a browser ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Chromium:  # type: ignore[misc]
    exe = find_chromium()
    if exe is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("Chromium is missing: scripts/test.sh installs Debian's chromium")
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    with Chromium(exe, width=1400, height=1000) as b:
        yield b


@pytest.mark.parametrize("name", ["explore", "rings", "case"])
def test_view_renders_in_chromium(built: dict[str, Any], browser: Chromium, name: str) -> None:
    browser.open(built["files"][name].as_uri())
    browser.wait_for("document.body.getAttribute('data-ready') === '1'", timeout=60)
    errors = browser.console_errors()
    assert not errors, errors
    fetched = [u for u in browser.requests() if not u.startswith(("file:", "data:", "about:"))]
    assert not fetched, f"the page fetched {fetched}"
    expected = [len(built["exploration"].view.nodes)] if name == "explore" else (
        [len(r.view.nodes) for r in built["rings"]] if name == "rings" else [len(built["case"].exploration.view.nodes)])
    drawn = browser.evaluate("window.SOCIALRISK.views.map(v => [v.nodes.length, Object.keys(v.network.getPositions()).length])")
    assert [d[0] for d in drawn] == expected and [d[1] for d in drawn] == expected
    # something was painted: the first canvas is not blank
    painted = browser.evaluate(
        "(() => { const c = document.querySelector('.graph canvas'); const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        " let n = 0; for (let i = 3; i < d.length; i += 4) { if (d[i] > 0) n++; } return n; })()"
    )
    assert painted > 2000
    browser.screenshot(ARTIFACTS / f"{name}.png")


def test_a_click_on_a_node_shows_its_details(built: dict[str, Any], browser: Chromium) -> None:
    browser.open(built["files"]["explore"].as_uri())
    browser.wait_for("document.body.getAttribute('data-ready') === '1'", timeout=60)
    x = built["exploration"]
    seed = x.explanation.contributions[0].seed
    where = browser.evaluate(
        f"(() => {{ const v = window.SOCIALRISK.views[0]; const p = v.network.canvasToDOM(v.network.getPositions(['{seed}'])['{seed}']);"
        " const r = v.network.body.container.getBoundingClientRect(); return [r.left + p.x, r.top + p.y]; })()"
    )
    for kind in ("mousePressed", "mouseReleased"):
        browser.call("Input.dispatchMouseEvent", {"type": kind, "x": where[0], "y": where[1], "button": "left", "clickCount": 1})
    text = browser.wait_for(f"(() => {{ const t = document.getElementById('explore-details').innerText; return t.includes('{seed}') && t; }})()",
                            timeout=10)
    assert "risk" in text and "fraud" in text and "decision" in text
    assert not browser.console_errors()
    browser.screenshot(ARTIFACTS / "explore-clicked.png")
