"""The HTML report: self-contained, every figure present, notes where a run lacks the data."""

from __future__ import annotations

import base64
import binascii
import io
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from simulator.api import run
from simulator.report import FIGURE_IDS, write_report
from tests.conftest import tiny

CHROMIUM = Path("/usr/bin/chromium")
CLIENT_FIGURES = ("fig-client-recall", "fig-client-rounds", "fig-partition")


class _Page(HTMLParser):
    """Collects what the checks need: ids, <img> sources, every URL-bearing attribute,
    and which ids sit on a <figure> that holds an <img> and a <figcaption>."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.imgs: list[str] = []
        self.urls: list[str] = []
        self.figures: dict[str, set[str]] = {}
        self._figure: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if "id" in a:
            self.ids.append(a["id"])
        for key in ("src", "href", "srcset", "poster", "data"):
            if key in a:
                self.urls.append(a[key])
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        if tag == "figure":
            self._figure = a.get("id", "")
            self.figures[self._figure] = set()
        elif self._figure is not None:
            self.figures[self._figure].add(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag == "figure":
            self._figure = None


def _parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    return page


QUICKSTART = Path(__file__).resolve().parent.parent / "scenarios" / "quickstart.yaml"


@pytest.fixture(scope="module")
def federated_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled quickstart, cut to 2 short rounds."""
    out = tmp_path_factory.mktemp("fed")
    short = ["federation.rounds=2", "federation.local_steps=5", "evaluation.every=1"]
    return run(QUICKSTART, short, out_dir=out).path


@pytest.fixture(scope="module")
def centralized_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cen")
    return run(tiny(), [], out_dir=out, centralized=True).path


@pytest.fixture(scope="module")
def federated_report(federated_dir: Path) -> Path:
    return write_report(federated_dir)


def _assert_self_contained(text: str) -> _Page:
    page = _parse(text)
    # No network at all: no absolute URLs in attributes, no CSS imports or url() fetches.
    for url in page.urls:
        assert not re.match(r"\s*(https?:)?//", url, re.I), url
    assert not re.search(r"@import|url\(\s*['\"]?(https?:)?//", text, re.I)
    assert "<link" not in text.lower()
    assert not re.search(r"<script[^>]*\ssrc=", text, re.I)
    assert page.imgs, "no images"
    for src in page.imgs:
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix), src[:60]
        try:
            raw = base64.b64decode(src[len(prefix) :], validate=True)
        except binascii.Error as exc:  # pragma: no cover - the message is the point
            pytest.fail(f"bad base64 image: {exc}")
        assert raw.startswith(b"\x89PNG\r\n\x1a\n")
        with Image.open(io.BytesIO(raw)) as im:
            im.verify()
            assert im.format == "PNG" and im.size[0] > 10 and im.size[1] > 10
    return page


def test_federated_report_is_self_contained_with_every_figure(
    federated_dir: Path, federated_report: Path
) -> None:
    assert federated_report == federated_dir / "report.html"
    text = federated_report.read_text(encoding="utf-8")
    page = _assert_self_contained(text)
    for fig_id in FIGURE_IDS:
        assert fig_id in page.figures, f"missing figure {fig_id}"
        assert {"img", "figcaption"} <= page.figures[fig_id], fig_id
        assert f"{fig_id}-note" not in page.ids
    assert len(page.imgs) == len(FIGURE_IDS)
    assert 'class="note error"' not in text
    assert len(page.ids) == len(set(page.ids)), "duplicate ids"
    for table_id in ("headline", "per-group", "diagnosis"):
        assert table_id in page.ids
    diagnosis = pd.read_csv(federated_dir / "diagnosis.csv")
    for label in diagnosis["label"]:
        assert f"<td>{label}</td>" in text


def test_centralized_report_has_notes_instead_of_client_figures(
    centralized_dir: Path, tmp_path: Path
) -> None:
    out = write_report(centralized_dir, tmp_path / "elsewhere" / "r.html")
    assert out == tmp_path / "elsewhere" / "r.html"
    assert not (centralized_dir / "report.html").exists()
    page = _assert_self_contained(out.read_text(encoding="utf-8"))
    for fig_id in CLIENT_FIGURES:
        assert fig_id not in page.figures
        assert f"{fig_id}-note" in page.ids
    for fig_id in set(FIGURE_IDS) - set(CLIENT_FIGURES):
        assert fig_id in page.figures, fig_id
    assert "step" in out.read_text(encoding="utf-8")


def test_run_without_samples_or_partition_gets_notes(federated_dir: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(federated_dir, tmp_path / "run")
    shutil.rmtree(copy / "samples")
    (copy / "partition.csv").unlink()
    page = _parse(write_report(copy).read_text(encoding="utf-8"))
    assert "fig-samples-note" in page.ids and "fig-partition-note" in page.ids
    assert "fig-group-metrics" in page.figures and "fig-training" in page.figures


def test_run_without_any_evaluation_still_renders(federated_dir: Path, tmp_path: Path) -> None:
    # An interrupted run: only the resolved scenario has been written.
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(federated_dir / "scenario.yaml", bare / "scenario.yaml")
    page = _parse(write_report(bare).read_text(encoding="utf-8"))
    assert "headline-note" in page.ids
    for fig_id in FIGURE_IDS:
        assert f"{fig_id}-note" in page.ids


def test_image_data_get_image_grids(tmp_path: Path) -> None:
    # A hand-made digits run folder: the image path without training a conv GAN.
    folder = tmp_path / "digits"
    (folder / "samples").mkdir(parents=True)
    scenario = {"name": "d", "seed": 0, "data": {"dataset": "digits", "n_samples": 200}}
    (folder / "scenario.yaml").write_text(yaml.safe_dump(scenario))
    rng = np.random.default_rng(0)
    for r in (1, 2):
        x = rng.uniform(-1, 1, (70, 64)).astype(np.float32)
        np.save(folder / "samples" / f"round-{r:06d}.npy", x)
    text = write_report(folder).read_text(encoding="utf-8")
    page = _assert_self_contained(text)
    assert "fig-samples" in page.figures
    assert "Generated images" in text


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
    cmd = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)


@pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs /usr/bin/chromium (apt-get update && apt-get install -y chromium)",
)
def test_every_image_loads_in_headless_chromium(federated_report: Path, tmp_path: Path) -> None:
    n_imgs = len(_parse(federated_report.read_text(encoding="utf-8")).imgs)
    # --dump-dom prints the DOM after the load event, when the report's inline check has run.
    res = _chromium(["--dump-dom", federated_report.resolve().as_uri()], tmp_path / "profile")
    assert res.returncode == 0, res.stderr[-2000:]
    dom = res.stdout
    marker = re.search(r'<div id="images-ok"[^>]*data-total="(\d+)"[^>]*>(\d+)</div>', dom)
    assert marker, f"no #images-ok in the dumped DOM: {dom[-500:]!r}\n{res.stderr[-1000:]}"
    assert int(marker.group(1)) == n_imgs
    assert int(marker.group(2)) == n_imgs, "some images did not decode"
    assert dom.count('data-loaded="1"') == n_imgs
    assert 'data-loaded="0"' not in dom

    shot = tmp_path / "shot.png"
    res = _chromium(
        ["--hide-scrollbars", "--window-size=1200,3000", f"--screenshot={shot}"]
        + [federated_report.resolve().as_uri()],
        tmp_path / "profile2",
    )
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    with Image.open(shot) as im:
        # A page that rendered its figures is far from one flat colour.
        assert len(im.convert("RGB").getcolors(maxcolors=1 << 20) or [0] * 1000) > 50
