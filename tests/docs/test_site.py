"""The documentation site builds with `mkdocs build --strict`: a broken link, a missing anchor,
a page left out of the nav or an API object mkdocstrings cannot find fails the build."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

WHY = "the docs extra is not installed: pip install -e '.[docs]'"
MODULES = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python", "mkdocs_jupyter")
for module in MODULES:
    pytest.importorskip(module, reason=WHY)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    res = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT, capture_output=True, text=True, env=env, timeout=300,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    return out


def _ids(page: Path) -> set[str]:
    return set(re.findall(r'id="([^"]+)"', page.read_text()))


def test_the_site_builds_strict_with_every_page(site: Path) -> None:
    for page in ("index.html", "getting-started/index.html", "findings/index.html",
                 "results/index.html", "tutorials/index.html", "guide/metrics/index.html"):
        assert (site / page).is_file(), page
    # The README's quickstart story and its "what it is" live once, in the README: included.
    assert "The first line installs everything" in (site / "getting-started/index.html").read_text()
    assert "GANs fail in two ways" in (site / "index.html").read_text()
    for n in range(1, 7):
        (nb,) = (site / "tutorials").glob(f"0{n}-*/index.html")
        assert "What you should see" in nb.read_text(), nb


def test_the_api_reference_documents_the_public_entry_points(site: Path) -> None:
    """Every entry point has its section; the pages name the installed modules (`fedgan.*`)
    while mkdocstrings reads the source folders statically (its anchors: `simulator.*`)."""
    expected = {
        "reference/api/index.html": ["simulator.api.run", "simulator.api.check",
                                     "simulator.api.load", "simulator.api.resume"],
        "reference/metrics/index.html": ["simulator.metrics.prdc.prdc",
                                         "simulator.metrics.forgetting.forgotten_groups",
                                         "simulator.metrics.diagnosis.diagnose",
                                         "simulator.metrics.registry.METRICS"],
        "reference/summary/index.html": ["simulator.summary.story",
                                         "simulator.summary.forgotten_sets",
                                         "simulator.summary.group_views"],
        "reference/scenario/index.html": ["simulator.scenario.load", "simulator.scenario.validate"],
        "reference/registries/index.html": ["simulator.registry.Registry"],
    }
    for page, names in expected.items():
        ids = _ids(site / page)
        for name in names:
            assert name in ids, (page, name)
        title = re.search(r"<h1[^>]*>(.*?)<", (site / page).read_text())
        assert title and title.group(1).startswith(("fedgan.", "Registries")), (page, title)


def test_notebook_links_point_at_pages_of_the_site(site: Path) -> None:
    """The notebooks link pages as files (`../findings.md#1`); the hook rewrites them."""
    html = (site / "tutorials" / "01-saturating-loss" / "index.html").read_text()
    assert 'href="../../findings/#1"' in html
    assert ".md" not in " ".join(re.findall(r'href="([^"]+)"', html))
