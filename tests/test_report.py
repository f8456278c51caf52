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
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
import pytest
import yaml
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.text import Text
from PIL import Image
from typer.testing import CliRunner

from simulator.api import run
from simulator.cli import app
from simulator.report import FIGURE_IDS, FONTS, MAX_WIDTH, context, figures, write_report
from simulator.scenario import validate
from simulator.store import load_run
from tests.conftest import GRID_MINORITY, tiny

runner = CliRunner()

CHROMIUM = Path("/usr/bin/chromium")
CLIENT_FIGURES = ("fig-client-recall", "fig-client-rounds", "fig-weights", "fig-partition")


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
@pytest.mark.parametrize("which", ["quickstart", "grid25", "table2"])
def test_every_image_loads_in_headless_chromium(
    which: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    if which == "quickstart":
        federated_report = request.getfixturevalue("federated_report")
    else:
        fixture = {"grid25": "grid25_run", "table2": "table_run"}[which]
        federated_report = write_report(request.getfixturevalue(fixture).path, tmp_path / "r.html")
    n_imgs = len(_parse(federated_report.read_text(encoding="utf-8")).imgs)
    # --dump-dom prints the DOM after the load event, when the report's inline check has run;
    # at a 1200-pixel window the page's content is 1150 pixels wide.
    res = _chromium(
        ["--window-size=1200,3000", "--dump-dom", federated_report.resolve().as_uri()],
        tmp_path / "profile",
    )
    assert res.returncode == 0, res.stderr[-2000:]
    dom = res.stdout
    marker = re.search(r'<div id="images-ok"[^>]*data-total="(\d+)"[^>]*>(\d+)</div>', dom)
    assert marker, f"no #images-ok in the dumped DOM: {dom[-500:]!r}\n{res.stderr[-1000:]}"
    assert int(marker.group(1)) == n_imgs
    assert int(marker.group(2)) == n_imgs, "some images did not decode"
    assert dom.count('data-loaded="1"') == n_imgs
    assert 'data-loaded="0"' not in dom
    # Every figure at its native size (scale 1): its 9-pt text is 9 pt on the page.
    scales = [float(v) for v in re.findall(r'data-scale="([\d.]+)"', dom)]
    assert len(scales) == n_imgs and min(scales) >= 0.999, scales

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


# ---- many groups, several groupings (issue 14, item 12) ----
def _panels(run_dir: Path, against: Path | None = None) -> dict[str, list[Any]]:
    """{figure id: its drawn panels}, as the report draws them (fonts in effect)."""
    ctx = context(load_run(run_dir), load_run(against) if against is not None else None)
    with matplotlib.rc_context(FONTS):
        return {fid: drawn for fid, _, drawn in figures(ctx) if isinstance(drawn, list)}


def _check_legible(fig: Figure) -> None:
    """No text under 9 pt, every legend inside the canvas (not clipped), the figure no wider
    than the page's content (so the browser shows it at its native size)."""
    fig.canvas.draw()
    assert fig.get_figwidth() <= MAX_WIDTH + 1e-9
    for text in fig.findobj(Text):
        if text.get_visible() and text.get_text().strip():
            assert text.get_fontsize() >= 9, repr(text.get_text())
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    box = fig.bbox
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]
    for legend in legends:
        ext = legend.get_window_extent(renderer)
        assert ext.x0 >= box.x0 - 1 and ext.x1 <= box.x1 + 1, (ext, box)
        assert ext.y0 >= box.y0 - 1 and ext.y1 <= box.y1 + 1, (ext, box)


def test_25_groups_legible_distinct_and_minorities_marked(grid25_run: Any) -> None:
    panels = _panels(grid25_run.path)
    for fig_id in FIGURE_IDS:
        assert fig_id in panels, fig_id
    for drawn in panels.values():
        for fig, _ in drawn:
            _check_legible(fig)
    fig, caption = panels["fig-group-metrics"][0]
    ax = fig.axes[0]
    colours = {to_hex(line.get_color()) for line in ax.get_lines()}
    assert len(colours) == 25  # one per group, none reused
    legend = fig.legends[0]
    names = [t.get_text() for t in legend.get_texts()]
    marked = [f"{g}*" for g in GRID_MINORITY]
    assert set(marked) <= set(names) and "1" in names and "1*" not in names
    assert "minority or rare" in caption
    # Beyond 10 groups the legend sits outside every axes.
    ext = legend.get_window_extent(fig.canvas.get_renderer())  # type: ignore[attr-defined]
    for a in fig.axes:
        assert not ext.overlaps(a.get_window_extent()), "legend over the plot"
    # Thick lines for the minorities.
    widths = {line.get_label(): line.get_linewidth() for line in ax.get_lines()}
    assert all(widths[m] > widths["1"] for m in marked)


def test_25_group_table_highlights_minorities_and_shows_clients_recall(grid25_run: Any) -> None:
    text = write_report(grid25_run.path).read_text(encoding="utf-8")
    table = text.split('<table id="per-group">')[1].split("</table>")[0]
    header = re.findall(r"<th>(.*?)</th>", table)
    assert header[:2] == ["mode", "recall"] and "clients&#x27; recall" in header
    rows = re.findall(r"<tr( class=\"minority\")?><td>(\d+)</td>(.*?)</tr>", table)
    assert [int(g) for _, g, _ in rows] == list(range(25))  # numeric order
    m = grid25_run.metrics
    last = m[m["scope"] == "global"]["round"].max()
    n = m[(m["scope"] == "global") & (m["round"] == last) & (m["metric"] == "recall")]
    n = n[n["group"] != ""].set_index("group")["n"]
    rare = {int(g) for g, v in n.items() if v < 5}  # min_group_size of the scenario
    assert {int(g) for flag, g, _ in rows if flag} == set(GRID_MINORITY) | rare
    # The clients' recall column: each mode's recall pooled over the clients' own data.
    pooled = m[(m["scope"] == "clients") & (m["metric"] == "eval.recall")]
    pooled = pooled[pooled["round"] == pooled["round"].max()].set_index("group")["value"]
    col = header.index("clients&#x27; recall")
    for _, g, cells in rows:
        shown = re.findall(r"<td>(.*?)</td>", f"<td>{g}</td>{cells}")[col]
        assert shown == f"{pooled[g]:.3f}"


def test_scatter_axes_follow_the_real_data_not_outliers(grid25_run: Any, tmp_path: Path) -> None:
    copy = shutil.copytree(grid25_run.path, tmp_path / "run")
    last = sorted((copy / "samples").glob("*.npy"))[-1]
    x = np.load(last)
    x[:5] = 1000.0  # five generated points far away
    np.save(last, x)
    fig, caption = _panels(copy)["fig-samples"][0]
    # The 5 × 5 grid's centres lie on {-4, -2, 0, 2, 4}² with small spread: axes near ±4.
    for lo, hi in (fig.axes[0].get_xlim(), fig.axes[0].get_ylim()):
        assert -5 < lo < -3.9 and 3.9 < hi < 5
    assert "5 generated points beyond them are not shown" in caption


def test_two_column_table_report_has_every_grouping(table_run: Any) -> None:
    text = write_report(table_run.path).read_text(encoding="utf-8")
    page = _assert_self_contained(text)
    for suffix, grouping in (("", "sex"), ("-2", "region"), ("-3", "sex|region")):
        assert f"per-group{suffix}" in page.ids and f"gaps{suffix}" in page.ids
        assert f"<h3>Per {grouping}</h3>" in text
        for fig_id in ("fig-group-metrics", "fig-client-recall"):
            assert f"{fig_id}{suffix}" in page.figures, (fig_id, suffix)
    assert len(page.ids) == len(set(page.ids))
    for drawn in _panels(table_run.path).values():
        for fig, _ in drawn:
            _check_legible(fig)


def test_against_overlays_two_runs_per_group_recall(table_run: Any, tmp_path: Path) -> None:
    twin = run(validate(load_run(table_run.path).scenario), [], out_dir=tmp_path, centralized=True)
    res = runner.invoke(
        app,
        [
            "report",
            str(table_run.path),
            "--against",
            str(twin.path),
            "--out",
            str(tmp_path / "r.html"),
        ],
    )
    assert res.exit_code == 0, res.output
    page = _parse((tmp_path / "r.html").read_text(encoding="utf-8"))
    assert {"fig-against", "fig-against-2", "fig-against-3"} <= set(page.figures)
    drawn = _panels(table_run.path, twin.path)["fig-against"]
    fig, caption = drawn[0]  # sex
    assert "federated (fedavg)" in caption and "centralized twin" in caption
    ax = fig.axes[0]  # recall
    for k, (run_dir, scope) in enumerate(((table_run.path, "global"), (twin.path, "centralized"))):
        m = load_run(run_dir).metrics
        rows = m[(m["scope"] == scope) & (m["group_by"] == "sex") & (m["metric"] == "recall")]
        rows = rows[rows["round"] == rows["round"].max()].set_index("group")["value"]
        bars = ax.containers[k]
        assert [b.get_height() for b in bars] == pytest.approx([rows["F"], rows["M"]])
    bad = runner.invoke(app, ["report", str(table_run.path), "--against", str(tmp_path)])
    assert bad.exit_code == 2 and "not a run folder" in bad.output
