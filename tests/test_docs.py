"""The documentation site builds strictly and offline (mkdocs.yml, docs/)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: A tag attribute that makes a browser fetch something as the page is viewed.
FETCH = re.compile(r"<(?:script|link|img|iframe|source|audio|video)\b[^>]*?\b(?:src|href)=[\"'](?:https?:)?//", re.I)
CSS_FETCH = re.compile(r"@import\s+url\(\s*[\"']?(?:https?:)?//|url\(\s*[\"']?(?:https?:)?//", re.I)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT, capture_output=True, text=True, env=env, timeout=600,
    )
    assert proc.returncode == 0, (
        "mkdocs build --strict failed (install the docs extra: pip install -e '.[docs]'):\n"
        + proc.stdout[-4000:] + proc.stderr[-4000:]
    )
    return out


def test_every_page_of_the_nav_is_built(site: Path) -> None:
    nav_pages = re.findall(r":\s*([\w/.-]+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), re.M)
    assert len(nav_pages) >= 15
    for page in nav_pages:
        assert (site / page.replace(".md", ".html")).is_file(), page


def test_api_reference_is_generated_from_the_docstrings(site: Path) -> None:
    page = (site / "reference" / "graph.html").read_text()
    # a parameter documented only in personalized_pagerank's numpydoc docstring
    assert "personalized_pagerank" in page
    assert "probability of continuing the walk" in page.lower() or "damping" in page.lower()


def test_nothing_is_fetched_when_a_page_is_viewed(site: Path) -> None:
    offenders = []
    for path in site.rglob("*"):
        if path.suffix == ".html":
            text = path.read_text(errors="replace")
            offenders += [f"{path.relative_to(site)}: {m.group(0)[:120]}" for m in FETCH.finditer(text)]
        elif path.suffix == ".css":
            text = path.read_text(errors="replace")
            offenders += [f"{path.relative_to(site)}: {m.group(0)[:120]}" for m in CSS_FETCH.finditer(text)]
    assert not offenders, "pages fetch from the network:\n" + "\n".join(offenders[:20])


def test_search_works_from_the_file_system(site: Path) -> None:
    # the offline plugin inlines the index into a script, which file:// pages can load
    assert (site / "search" / "search_index.js").is_file()
    assert (site / "assets" / "vendor" / "iframe-worker" / "shim.js").is_file()


def _tables_module():  # type: ignore[no-untyped-def]
    import importlib.util

    spec = importlib.util.spec_from_file_location("docs_tables", ROOT / "benchmarks" / "tables.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_tables_match_the_results_files() -> None:
    tables = _tables_module()
    stale = tables.update(check=True)
    assert not stale, "run python benchmarks/tables.py; these tables differ from benchmarks/results: " + ", ".join(stale)


def test_every_marked_table_has_a_generator_and_a_page(tmp_path: Path) -> None:
    tables = _tables_module()
    used = set()
    for page in (ROOT / "docs").rglob("*.md"):
        used |= {m.group("name") for m in tables.BLOCK.finditer(page.read_text())}
    assert used == set(tables.TABLES)
    # a hand edit inside a block is caught, and rewritten from the results
    page = tmp_path / "page.md"
    page.write_text("<!-- table: scale -->\n| edited by hand |\n<!-- /table -->\n")
    stale = tables.update(check=True, docs=tmp_path)
    assert len(stale) == 1 and stale[0].endswith(": scale")
    tables.update(docs=tmp_path)
    assert "edited by hand" not in page.read_text() and tables.update(check=True, docs=tmp_path) == []
