"""The HTML report: self-contained, every figure present, notes where a run lacks the data."""

from __future__ import annotations

import base64
import binascii
import html
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
from fedgan.simulator.api import run
from fedgan.simulator.cli import app
from fedgan.simulator.report import FIGURE_IDS, FONTS, MAX_WIDTH, context, figures, write_report
from fedgan.simulator.scenario import validate
from fedgan.simulator.store import load_run
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.text import Text
from PIL import Image
from typer.testing import CliRunner

from tests.conftest import GRID_MINORITY, tiny

runner = CliRunner()

CHROMIUM = Path("/usr/bin/chromium")
CLIENT_FIGURES = ("fig-client-coverage", "fig-client-served", "fig-weights", "fig-partition")


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
            assert float(text.get_fontsize()) >= 9, repr(text.get_text())
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    box = fig.bbox
    legends = [*fig.legends, *(lg for ax in fig.axes if (lg := ax.get_legend()) is not None)]
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
    ext = legend.get_window_extent(fig.canvas.get_renderer())
    for a in fig.axes:
        assert not ext.overlaps(a.get_window_extent()), "legend over the plot"
    # Thick lines for the minorities.
    widths = {line.get_label(): line.get_linewidth() for line in ax.get_lines()}
    assert all(widths[m] > widths["1"] for m in marked)


def test_25_group_table_highlights_minorities_and_shows_who_is_forgotten(
    grid25_run: Any,
) -> None:
    text = write_report(grid25_run.path).read_text(encoding="utf-8")
    table = text.split('<table id="per-group">')[1].split("</table>")[0]
    header = re.findall(r"<th>(.*?)</th>", table)
    assert header[:2] == ["mode", "coverage"] and "forgotten" in header
    assert not any("recall" in h for h in header)  # the clients' pooled recall is gone
    rows = re.findall(r"<tr( class=\"minority\")?><td>(\d+)</td>(.*?)</tr>", table)
    assert [int(g) for _, g, _ in rows] == list(range(25))  # numeric order
    m = grid25_run.metrics
    last = m[m["scope"] == "global"]["round"].max()
    now = m[(m["scope"] == "global") & (m["round"] == last) & (m["group"] != "")]
    n = now[now["metric"] == "recall"].set_index("group")["n"]
    rare = {int(g) for g, v in n.items() if v < 5}  # min_group_size of the scenario
    assert {int(g) for flag, g, _ in rows if flag} == set(GRID_MINORITY) | rare
    # The forgotten column: the evaluation's own forgotten rows, group by group.
    lost = now[now["metric"] == "forgotten"].set_index("group")["value"]
    col = header.index("forgotten")
    for _, g, cells in rows:
        shown = re.findall(r"<td>(.*?)</td>", f"<td>{g}</td>{cells}")[col]
        assert shown == ("yes" if lost[g] >= 0.5 else "no")


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
        for fig_id in ("fig-group-metrics", "fig-group-bars", "fig-client-coverage"):
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
    assert bad.exit_code == 2 and "a run folder" in bad.output


# ---- one instrument, one story (issue 24) ----
def _row(
    round_: int, scope: str, client: int, group_by: str, group: str, metric: str, value: float
) -> dict[str, Any]:
    return {
        "round": round_,
        "scope": scope,
        "client": client,
        "group_by": group_by,
        "group": group,
        "metric": metric,
        "value": float(value),
        "n": 100,
    }


HELD = {0: {"0": 40, "1": 60}, 1: {"2": 50, "3": 30}, 2: {"0": 50, "3": 20}}
"""The hand-made run's clients: the held-out points each holds of each mode."""


def _hand_run(
    folder: Path,
    lost: dict[int, set[str]],
    *,
    scope: str = "global",
    coverage: dict[str, float] | None = None,
    worst: int = 0,
) -> Path:
    """A run folder written by hand: a 4-mode ring of radius 2 (modes at (2, 0), (0, 2),
    (-2, 0), (0, -2)), two evaluations whose forgotten modes are `lost[round]`, the clients of
    `HELD` (none for a centralized `scope`) with `worst` the worst-served, samples near
    modes 0 and 2 and a diagnosis of the last round with two failures."""
    (folder / "samples").mkdir(parents=True)
    scenario: dict[str, Any] = {
        "name": "hand",
        "seed": 0,
        "data": {"dataset": "ring", "n_samples": 400, "params": {"n_modes": 4, "radius": 2.0}},
        "evaluation": {"min_group_size": 5},
    }
    if scope == "global":
        scenario["partition"] = {"name": "explicit", "n_clients": 3}
        scenario["federation"] = {"rounds": 2}
    (folder / "scenario.yaml").write_text(yaml.safe_dump(scenario))
    cov = coverage or {"0": 0.8, "1": 0.0, "2": 0.7, "3": 0.0}
    rows = []
    for r in (1, 2):
        for metric, value in (("recall", 0.5), ("precision", 0.9), ("coverage", 0.45)):
            rows.append(_row(r, scope, -1, "", "", metric, value))
        for g in ("0", "1", "2", "3"):
            gone = g in lost[r]
            for metric, value in (
                ("recall", 0.0 if gone else 0.6),
                ("coverage", 0.0 if gone else cov[g]),
                ("precision", 0.9),
                ("mass", 0.0 if gone else 0.5),
                ("mass_ratio", 0.0 if gone else 1.0),
                ("forgotten", 1.0 if gone else 0.0),
            ):
                rows.append(_row(r, scope, -1, "mode", g, metric, value))
        rows.append(_row(r, scope, -1, "mode", "", "forgotten.count", len(lost[r])))
        if scope != "global":
            continue
        for c, groups in HELD.items():
            total = sum(groups.values())
            served = sum(n for g, n in groups.items() if g not in lost[r]) / total
            rows.append(_row(r, "client", c, "", "", "eval.coverage", 0.2 + 0.1 * c))
            rows.append(_row(r, "client", c, "mode", "", "eval.served_share", served))
            rows.append(_row(r, "client", c, "", "", "local.recall", 0.9))
            for g in groups:
                rows.append(
                    _row(r, "client", c, "mode", g, "eval.coverage", 0.0 if g in lost[r] else 0.8)
                )
        rows.append(_row(r, "clients", -1, "mode", "", "worst_client", worst))
    pd.DataFrame(rows).to_parquet(folder / "metrics.parquet")
    rng = np.random.default_rng(0)
    for r in (1, 2):
        x = np.concatenate([rng.normal((2, 0), 0.05, (50, 2)), rng.normal((-2, 0), 0.05, (50, 2))])
        np.save(folder / "samples" / f"round-{r:06d}.npy", x.astype(np.float32))
    reason = (
        "mode_dropping: 2 group(s) forgotten — less than 0.1 × their share of the on-support "
        "samples: mode=1 (mass 0.000 × its share, coverage 0.000), mode=3 (mass 0.000 × its "
        "share, coverage 0.000); low_fidelity: density 0.500 < 0.75"
    )
    pd.DataFrame(
        [
            {"round": 2, "scope": scope, "client": -1, "label": "mode_dropping", "reason": reason},
            {"round": 2, "scope": "client", "client": 1, "label": "healthy", "reason": "x"},
        ]
    ).to_csv(folder / "diagnosis.csv", index=False)
    return folder


HAND_REASON_FAILURES = ("mode_dropping: 2 group(s) forgotten", "; low_fidelity: density 0.500")


def _story(text: str) -> str:
    found = re.search(r'<p class="story" id="story">(.*?)</p>', text, re.S)
    assert found, "no opening story paragraph"
    return found.group(1)


def test_report_opens_with_the_story_of_hand_chosen_forgotten_groups(tmp_path: Path) -> None:
    folder = _hand_run(tmp_path / "hand", {1: {"1"}, 2: {"1", "3"}})
    text = write_report(folder).read_text(encoding="utf-8")
    # The opening: the story paragraph comes right after the title, before any table.
    assert re.search(r"</h1>\s*<p class=\"story\" id=\"story\">", text)
    opening = _story(text)
    from fedgan.simulator.summary import story

    assert opening == html.escape(story(load_run(folder).metrics, 2))
    # What was written by hand: modes 1 and 3 forgotten at round 2; client 0 holds mode 1,
    # clients 1 and 2 hold mode 3; client 0 is the worst served (60 of its 100 points lost).
    plain = html.unescape(opening)
    assert "round 2" in plain
    assert "1 (held by client 0)" in plain and "3 (held by clients 1, 2)" in plain
    assert "0 (held" not in plain and "2 (held" not in plain
    assert "Worst-served client: 0 (40%" in plain
    assert "Precision 0.900" in plain
    # The summary box: the diagnosis's label and its whole reason (every failure), of the
    # whole population, not of a client.
    diag = re.search(r'<p class="diag" id="headline-diagnosis">(.*?)</p>', text, re.S)
    assert diag and "<b>mode_dropping</b>" in diag.group(1)
    assert all(html.escape(f) in diag.group(1) for f in HAND_REASON_FAILURES)
    assert "healthy" not in diag.group(1)


def test_client_figures_show_coverage_and_served_share_never_recall(tmp_path: Path) -> None:
    folder = _hand_run(tmp_path / "hand", {1: {"1"}, 2: {"1", "3"}})
    text = write_report(folder).read_text(encoding="utf-8")
    page = _parse(text)
    assert {"fig-client-coverage", "fig-client-served"} <= set(page.figures)
    for fig_id in ("fig-client-coverage", "fig-client-served"):
        section = text.split(f'id="{fig_id}-section">')[1].split("<h2")[0]
        assert "recall" not in section.lower(), fig_id  # title, alt text and caption
    panels = _panels(folder)
    for fig_id in ("fig-client-coverage", "fig-client-served"):
        for fig, _ in panels[fig_id]:
            fig.canvas.draw()
            words = [t.get_text() for t in fig.findobj(Text)]
            assert not any("recall" in w.lower() for w in words), (fig_id, words)
            _check_legible(fig)
    # The heat map: client × mode coverage at round 2, blank where a client holds no points
    # of the mode, the forgotten modes' columns framed in red, named in the caption.
    fig, caption = panels["fig-client-coverage"][0]
    ax = fig.axes[0]
    shown = ax.images[0].get_array()
    assert isinstance(shown, np.ma.MaskedArray)
    expected_blank = [[g not in HELD[c] for g in "0123"] for c in (0, 1, 2)]
    assert shown.mask.tolist() == expected_blank
    assert shown[0, 0] == pytest.approx(0.8) and shown[0, 1] == pytest.approx(0.0)
    frames = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert sorted(p.get_x() + 0.5 for p in frames) == [1.0, 3.0]
    assert "1 (held by client 0), 3 (held by clients 1, 2)" in caption
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0 (worst)", "1", "2"]
    # The lines: each client's coverage and served share per evaluation, client 0 (the worst
    # served) highlighted; the served share is the hand-written one.
    fig, caption = panels["fig-client-served"][0]
    served_ax = fig.axes[1]
    lines = {line.get_label(): line for line in served_ax.get_lines()}
    assert set(lines) == {"client 0 (worst-served)", "client 1", "client 2"}
    assert list(lines["client 1"].get_ydata()) == pytest.approx([1.0, 50 / 80])
    assert list(lines["client 0 (worst-served)"].get_ydata()) == pytest.approx([0.4, 0.4])
    widths = {k: v.get_linewidth() for k, v in lines.items()}
    assert widths["client 0 (worst-served)"] > max(widths["client 1"], widths["client 2"])
    assert "client 0 (40%" in caption


def test_group_bars_mark_the_forgotten_groups(tmp_path: Path) -> None:
    folder = _hand_run(tmp_path / "hand", {1: {"1"}, 2: {"1", "3"}})
    fig, caption = _panels(folder)["fig-group-bars"][0]
    _check_legible(fig)
    top, bottom = fig.axes[:2]
    cov = [b.get_height() for b in top.containers[0]]
    assert cov == pytest.approx([0.8, 0.0, 0.7, 0.0])
    ratio = [b.get_height() for b in bottom.containers[0]]
    assert ratio == pytest.approx([1.0, 0.0, 1.0, 0.0])
    red = [to_hex(b.get_facecolor()) == "#b2182b" for b in top.containers[0]]
    assert red == [False, True, False, True]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "forgotten: 1, 3" in legend
    assert "Forgotten (red, hatched column): mode 1, 3." in caption


def test_ring_caption_and_circles_say_where_the_forgotten_modes_are(tmp_path: Path) -> None:
    folder = _hand_run(tmp_path / "hand", {1: {"1"}, 2: {"1", "3"}})
    fig, caption = _panels(folder)["fig-samples"][0]
    # Ring of radius 2, 4 modes: mode 1 at (0, 2), mode 3 at (0, −2).
    assert (
        "Forgotten at round 2 (red circles): mode 1 at (0.00, 2.00) (held by client 0), "
        "mode 3 at (0.00, -2.00) (held by clients 1, 2)." in caption
    )

    def circled(ax: Any) -> list[tuple[float, float]]:
        out = []
        for coll in ax.collections:
            edges = coll.get_edgecolor()
            if len(edges) and to_hex(edges[0]) == "#b2182b":
                out += [(round(x, 6) + 0.0, round(y, 6) + 0.0) for x, y in coll.get_offsets()]
        return sorted(out)

    # Each panel circles the modes forgotten at its own evaluation.
    assert circled(fig.axes[0]) == [(0.0, 2.0)]
    assert circled(fig.axes[1]) == [(0.0, -2.0), (0.0, 2.0)]
    assert "forgotten mode" in [t.get_text() for t in fig.legends[0].get_texts()]


def test_ring_caption_says_when_nothing_is_forgotten(tmp_path: Path) -> None:
    folder = _hand_run(tmp_path / "hand", {1: set(), 2: set()})
    fig, caption = _panels(folder)["fig-samples"][0]
    assert "No mode is forgotten at round 2." in caption
    assert "Forgotten at" not in caption
    text = write_report(folder).read_text(encoding="utf-8")
    assert "no mode is forgotten" in html.unescape(_story(text))


def test_against_sentence_says_what_the_other_run_keeps_and_forgets(tmp_path: Path) -> None:
    mine = _hand_run(tmp_path / "mine", {1: {"1"}, 2: {"1", "3"}})
    # The other run (centralized) forgets mode 3 only, and covers mode 1 at 0.5 (kept).
    other = _hand_run(
        tmp_path / "other",
        {1: {"3"}, 2: {"3"}},
        scope="centralized",
        coverage={"0": 0.8, "1": 0.5, "2": 0.7, "3": 0.0},
    )
    text = write_report(mine, tmp_path / "r.html", against=other).read_text(encoding="utf-8")
    plain = html.unescape(_story(text))
    ctx = context(load_run(mine), load_run(other))
    assert (
        f"Against {ctx.names[1]} (step 2): it forgets mode 3; of this run's forgotten modes "
        "it keeps (coverage ≥ 0.3) 1." in plain
    )
    # The overlay names both runs' forgotten groups too, this run's red on the axis.
    fig, caption = _panels(mine, other)["fig-against"][0]
    assert f"(red labels): 1, 3; by {ctx.names[1]}: 3." in caption
    red = [
        t.get_text() for t in fig.axes[0].get_xticklabels() if to_hex(t.get_color()) == "#b2182b"
    ]
    assert red == ["1", "3"]
    # Still the story first.
    from fedgan.simulator.summary import story

    assert plain.startswith(story(load_run(mine).metrics, 2))


def test_real_run_report_tells_the_story_and_its_full_diagnosis(
    federated_dir: Path, federated_report: Path
) -> None:
    from fedgan.simulator.summary import story

    text = federated_report.read_text(encoding="utf-8")
    m = load_run(federated_dir).metrics
    assert _story(text) == html.escape(story(m, int(m["round"].max())))
    diagnosis = pd.read_csv(federated_dir / "diagnosis.csv")
    last = diagnosis[(diagnosis["scope"] == "global") & (diagnosis["client"] < 0)].iloc[-1]
    diag = re.search(r'<p class="diag" id="headline-diagnosis">(.*?)</p>', text, re.S)
    assert diag and f"<b>{last['label']}</b>" in diag.group(1)
    assert html.escape(last["reason"]) in diag.group(1)
    for fig_id in ("fig-client-coverage", "fig-client-served"):
        section = text.split(f'id="{fig_id}-section">')[1].split("<h2")[0]
        assert "recall" not in section.lower()
