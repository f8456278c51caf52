"""A self-contained HTML report of one run folder (`report.html`).

Everything is inline — figures are base64 PNGs drawn with matplotlib's Agg canvas, the CSS is a
`<style>` block — so the file opens offline, attaches to an e-mail and survives being moved.
Every section reads what the run folder holds; a section whose data the run lacks (no clients in
a centralized run, no samples, a dataset that cannot be re-created) becomes a short note.

The report tells one story: it opens with `simulator.summary.story` of the last evaluation, and
every figure that marks a forgotten group or the worst-served client reads them through the
summary's readers (`forgotten_sets`, `holders`, `worst_client`, the group views), never from a
rule of its own. Clients are shown by their coverage and served share, never by recall.

Figures are drawn at 96 dpi — a matplotlib point is a CSS point — and never wider than the
page's content (`MAX_WIDTH`), so the browser shows them at their native size and no text is
smaller than `MIN_FONT` points.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from fedgan.simulator.metrics.forgetting import FORGOTTEN_MASS_RATIO, KEEP_COVERAGE, kept
from fedgan.simulator.store import Run, atomic_write_text, load_run, round_files
from fedgan.simulator.summary import (
    SEPARATOR,
    GroupView,
    client_group_table,
    fidelity_table,
    forgotten_sets,
    gap_rows,
    group_order,
    group_table,
    group_view_rows,
    group_views,
    headline,
    headline_rows,
    holders,
    last_round,
    legend_text,
    main_scope,
    story,
    worst_client,
)
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import MaxNLocator

FIGURE_IDS = (
    "fig-samples",
    "fig-group-bars",
    "fig-group-metrics",
    "fig-fairness",
    "fig-client-coverage",
    "fig-client-served",
    "fig-weights",
    "fig-partition",
    "fig-training",
)
"""Figure ids of a full federated report; a missing one is replaced by `<p id="<id>-note">`.
A section with one figure per grouping numbers the others `<id>-2`, `<id>-3`, ..."""
OPTIONAL_FIGURE_IDS = ("fig-against", "fig-image-groups", "fig-image-clients")
"""Figures that need more than a run: a second run to overlay (`fedgan report RUN --against
OTHER`), or image data (the per-group and per-client image grids)."""

MAX_SAMPLE_PANELS = 8
"""Evaluations drawn in the samples figure (evenly spaced, always the last): keeps it legible."""
MAX_POINTS = 2000
"""Points per scatter, real and generated: more only slows Agg and hides the density."""
IMAGE_GRID = 8
"""Image grids are IMAGE_GRID × IMAGE_GRID samples."""
DPI = 96
"""CSS pixels per inch: a figure's points are the page's points at its native size."""
MAX_WIDTH = 11.4
"""Inches: the page's content width (1150 px less padding) at `DPI`, so no figure is shrunk."""
MIN_FONT = 9
"""The smallest text in any figure, in points."""
FONTS: dict[Any, Any] = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "xtick.labelsize": MIN_FONT,
    "ytick.labelsize": MIN_FONT,
    "legend.fontsize": MIN_FONT,
    "legend.title_fontsize": MIN_FONT,
    "figure.titlesize": 11,
}
MANY_GROUPS = 10
"""Beyond this many groups a legend goes outside the axes, in as many columns as it needs."""
MINORITY_MARK = "*"
"""Suffix of a minority or rare group's label in figures (the tables say which it is)."""
FORGOTTEN_COLOR = "#b2182b"
"""Red: what every figure marks a forgotten group (or the worst-served client) with."""
KEPT_COLOR = "#2166ac"
"""Blue: the bars of groups that are not forgotten."""
LEGEND_NAMES = 8
"""At most this many forgotten groups are named in a legend (all of them in the caption): a
longer list would be wider than the figure."""


class _NoData(Exception):
    """A section cannot be drawn from this run; the message becomes the note."""


Panel = tuple[Figure, str]
"""One drawn figure and its caption."""


@dataclass
class _Context:
    run: Run
    scope: str
    step_word: str
    views: list[GroupView]
    round_: int | None = None
    """The last evaluation of the main scope (None: none has finished)."""
    against: Run | None = None
    names: tuple[str, str] = ("this run", "other run")
    notes: list[str] = field(default_factory=list)

    @property
    def group_by(self) -> str:
        """The first grouping (what the scatter is coloured by)."""
        return self.views[0].grouping if self.views else ""

    def marked(self, grouping: str) -> set[str]:
        """Minority and rare groups of `grouping`, as the tidy table labels them."""
        view = next((v for v in self.views if v.grouping == grouping), None)
        return {str(g) for g in view.marked} if view is not None else set()

    def forgotten(self, grouping: str) -> list[str]:
        """The forgotten groups of `grouping` at the last evaluation (`forgotten_sets`)."""
        view = next((v for v in self.views if v.grouping == grouping), None)
        return [str(g) for g in view.forgotten] if view is not None else []


# ---- small helpers ---------------------------------------------------------------------------
def _figure(width: float, height: float) -> Figure:
    # A bare Figure with its own Agg canvas: no pyplot, so no global backend or figure registry
    # is touched in a process (a notebook, the CLI) that may use matplotlib for other things.
    fig = Figure(figsize=(min(width, MAX_WIDTH), height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _round_axis(ax: Axes, word: str) -> None:
    """Rounds and steps are integers: no 2.25 ticks."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(word)
    ax.grid(alpha=0.3)


def _colors(n: int) -> list[Any]:
    """n distinct colours: tab10 up to 10, tab20 up to 20, then tab20b and tab20c (60), then
    evenly spaced hues."""
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    pool = [colormaps[name](i) for name in ("tab20", "tab20b", "tab20c") for i in range(20)]
    if n <= len(pool):
        return pool[:n]
    return [colormaps["turbo"](i / max(n - 1, 1)) for i in range(n)]


def _legend_columns(n: int, height: float) -> int:
    """Columns a legend of n entries needs to fit in `height` inches at `MIN_FONT`."""
    rows = max(int(height * 72 / (MIN_FONT * 1.7)) - 2, 1)  # less the title and the margins
    return max(math.ceil(n / rows), 1)


def _legend(fig: Figure, handles: list[Any], names: list[str], title: str, height: float) -> None:
    """A figure legend outside the axes, on the right, in enough columns not to clip."""
    if handles:
        fig.legend(
            handles,
            names,
            loc="outside right upper",
            ncols=_legend_columns(len(handles), height),
            markerscale=2,
            title=title,
        )


def _label(group: Any, marked: set[str]) -> str:
    return f"{group}{MINORITY_MARK}" if str(group) in marked else str(group)


def _minority_note(ctx: _Context, grouping: str) -> str:
    marked = group_order(ctx.marked(grouping))
    if not marked:
        return ""
    return (
        f" {MINORITY_MARK} (drawn thick): minority or rare groups ({', '.join(marked)}; "
        "see the per-group table)."
    )


# ---- figures ---------------------------------------------------------------------------------
def _sample_files(run_dir: Path) -> dict[int, Path]:
    return round_files(run_dir / "samples", ".npy")


def _pick_rounds(rounds: Sequence[int], k: int) -> list[int]:
    if len(rounds) <= k:
        return list(rounds)
    idx = np.unique(np.linspace(0, len(rounds) - 1, k).round().astype(int))
    return [rounds[i] for i in idx]


@dataclass(frozen=True)
class _Real:
    """The real data a samples figure is drawn over."""

    X: np.ndarray
    labels: np.ndarray | None
    """Labels of the first grouping, as strings."""
    image_shape: Any
    what: str
    means: np.ndarray | None = None
    """The mixture's mode means [K, d], where the dataset knows them (ring, grid, ...)."""
    mode_column: str = "mode"
    """The group column the means are indexed by (the grouping "mode" of the tidy table)."""


def _real_data(ctx: _Context) -> _Real:
    """The held-out real data, the labels of the first grouping as strings and the mode
    means, re-created from the resolved scenario with the run's own seed derivation, so it is
    the set the run scored."""
    from fedgan.simulator.data import load_dataset
    from fedgan.simulator.metrics.groups import group_labels
    from fedgan.simulator.prepare import stratified_split
    from fedgan.simulator.seeding import derive_seed, numpy_rng

    sc = ctx.run.scenario
    data = sc.get("data") or {}
    seed = int(sc.get("seed", 0))
    ds = load_dataset(
        data["dataset"], data.get("n_samples"), derive_seed(seed, "data"), data.get("params") or {}
    )
    # The means belong to the whole mixture, not to the split: take them before subsetting.
    means = np.asarray(ds.modes.means, dtype=float) if ds.modes is not None else None
    what = "real data"
    holdout = data.get("holdout")
    if holdout:
        _, held = stratified_split(ds, float(holdout), numpy_rng(seed, "split"))
        ds = ds.subset(held)
        what = "held-out real data"
    cols = ctx.group_by.split(SEPARATOR) if ctx.group_by else [ds.group_column]
    if not all(c in ds.groups.columns for c in cols):
        cols = [ds.group_column]
    labels = group_labels(ds.groups, cols).astype(str).to_numpy()
    return _Real(ds.X, labels, ds.image_shape, what, means, str(ds.group_column))


def _image_grid(x: np.ndarray, shape: tuple[int, int, int], k: int) -> np.ndarray:
    """k × k mosaic [k·(H+1), k·(W+1), C] in [0, 1] of the first k² rows of x (C·H·W rows)."""
    c, h, w = shape
    n = min(len(x), k * k)
    # One grey pixel of padding on the right/bottom of each tile keeps neighbours apart.
    imgs = np.full((k * k, c, h + 1, w + 1), 0.5, dtype=np.float32)
    # Image datasets live in [-1, 1] (tanh outputs); clip so a wild generator still renders.
    imgs[:n, :, :h, :w] = np.clip((x[:n].reshape(n, c, h, w) + 1.0) / 2.0, 0.0, 1.0)
    return (
        imgs.reshape(k, k, c, h + 1, w + 1)
        .transpose(0, 3, 1, 4, 2)
        .reshape(k * (h + 1), k * (w + 1), c)
    )


def _limits(points: np.ndarray) -> tuple[tuple[float, float], tuple[float, float]]:
    """Axis limits that show `points` [n, 2] with a 5 % margin."""
    lo, hi = points.min(axis=0), points.max(axis=0)
    pad = np.maximum((hi - lo) * 0.05, 1e-6)
    return (float(lo[0] - pad[0]), float(hi[0] + pad[0])), (
        float(lo[1] - pad[1]),
        float(hi[1] + pad[1]),
    )


def _forgotten_modes(
    ctx: _Context, column: str, rounds: Sequence[int], n_modes: int
) -> dict[int, list[int]]:
    """{round: the mode indices forgotten at it} of the samples figure's panels, read through
    `forgotten_sets` (labels that are not a mode index of the mixture are left out)."""
    out: dict[int, list[int]] = {}
    for r in rounds:
        lost = forgotten_sets(ctx.run.metrics, ctx.scope, r).get(column, [])
        out[r] = [int(g) for g in lost if g.isdigit() and int(g) < n_modes]
    return out


def _forgotten_caption(
    ctx: _Context, column: str, round_: int, means: np.ndarray | None, coordinates: bool
) -> str:
    """Where the forgotten groups of `column` are at `round_`: "Forgotten at round 400 (red
    circles): mode 0 at (2.00, 0.00) (held by client 0), ..." or that none is."""
    m = ctx.run.metrics
    lost = forgotten_sets(m, ctx.scope, round_)
    if column not in lost:
        return ""
    word = ctx.step_word
    if not lost[column]:
        return f" No {column} is forgotten at {word} {round_}."
    held = holders(m, round_, column)
    named = []
    for g in lost[column]:
        text = f"{column} {g}"
        if coordinates and means is not None and g.isdigit() and int(g) < len(means):
            # round, then + 0.0: cos(3π/2) is -1.8e-16, which would print as "-0.00"
            text += " at (" + ", ".join(f"{round(v, 2) + 0.0:.2f}" for v in means[int(g)]) + ")"
        who = held.get(g, [])
        if who:
            text += f" (held by client{'s' if len(who) > 1 else ''} {', '.join(map(str, who))})"
        named.append(text)
    circles = " (red circles)" if means is not None else ""
    return f" Forgotten at {word} {round_}{circles}: {', '.join(named)}."


def fig_samples(ctx: _Context) -> list[Panel]:
    files = _sample_files(ctx.run.path)
    if not files:
        raise _NoData("no generated samples were saved (samples/ is empty)")
    rounds = _pick_rounds(sorted(files), MAX_SAMPLE_PANELS)
    real_set: _Real | None
    try:
        real_set = _real_data(ctx)
        real_note = ""
    except Exception as exc:  # any plug-in/table dataset may be unavailable here; still draw
        real_set = None
        real_note = f" The real data could not be re-created ({type(exc).__name__}: {exc})."
    rng = np.random.default_rng(0)
    gens = {r: np.load(files[r]) for r in rounds}
    dim = next(iter(gens.values())).shape[1]
    if real_set is not None and real_set.X.shape[1] != dim:
        real_note = (
            f" The re-created real data have d = {real_set.X.shape[1]}, the samples d = {dim}."
        )
        real_set = None
    real = real_set.X if real_set is not None else None
    labels = real_set.labels if real_set is not None else None
    image_shape = real_set.image_shape if real_set is not None else None
    what = real_set.what if real_set is not None else ""
    skipped = len(files) - len(rounds)
    tail = f" ({skipped} other evaluations not drawn.)" if skipped else ""
    word = ctx.step_word

    if image_shape is not None and math.prod(image_shape) == dim:
        panels = ([("real", real)] if real is not None else []) + [
            (f"{word} {r}", gens[r]) for r in rounds
        ]
        cols = min(4, len(panels))
        rows = math.ceil(len(panels) / cols)
        fig = _figure(2.8 * cols, 3.0 * rows)
        for i, (title, x) in enumerate(panels):
            ax = fig.add_subplot(rows, cols, i + 1)
            grid = _image_grid(np.asarray(x), image_shape, IMAGE_GRID)
            ax.imshow(
                grid[..., 0] if grid.shape[2] == 1 else grid,
                cmap="gray",
                vmin=0,
                vmax=1,
                interpolation="nearest",  # smoothing 8×8 pixels turns digits into blur
            )
            ax.set_title(title)
            ax.set_axis_off()
        caption = (
            f"Generated images at each evaluation ({IMAGE_GRID}×{IMAGE_GRID} first samples), "
            f"next to {what or 'no real data'}.{tail}{real_note}"
        )
        return [(fig, caption)]

    # Vectors: 2-D as is; higher dimensions through the real data's top two principal axes.
    proj_note = ""
    if dim == 2:

        def project(a: np.ndarray) -> np.ndarray:
            return a

    else:
        basis_src = real if real is not None else gens[rounds[-1]]
        mean = basis_src.mean(axis=0)
        _, _, vt = np.linalg.svd(basis_src - mean, full_matrices=False)
        basis = vt[:2].T

        def project(a: np.ndarray) -> np.ndarray:
            return (a - mean) @ basis

        proj_note = f" {dim}-D data shown on the real data's first two principal axes."

    # The mixture's mode means, where known and in the samples' space: each panel circles the
    # modes forgotten at its evaluation, so the reader sees where the generator left a gap.
    means = real_set.means if real_set is not None else None
    if means is not None and (means.ndim != 2 or means.shape[1] != dim):
        means = None
    # Without means the caption still names the forgotten groups the scatter is coloured by.
    mode_column = real_set.mode_column if real_set is not None and means is not None else ""
    mode_column = mode_column or ctx.group_by
    lost_modes = _forgotten_modes(ctx, mode_column, rounds, len(means)) if means is not None else {}

    real_idx = (
        rng.choice(len(real), min(len(real), MAX_POINTS), replace=False)
        if real is not None
        else None
    )
    groups = group_order(np.unique(labels)) if labels is not None else []
    marked = ctx.marked(ctx.group_by)
    legend_w = 0.9 * _legend_columns(len(groups) + 2, 3.0 * 2) + 0.6
    cols = min(4, len(rounds))
    rows = math.ceil(len(rounds) / cols)
    side = min(2.9, (MAX_WIDTH - legend_w) / cols)
    height = max(side * rows, 3.0)
    fig = _figure(side * cols + legend_w, height)
    colors = _colors(len(groups))
    limits = _limits(project(real)) if real is not None else None
    outside = 0
    first_ax: Axes | None = None
    for i, r in enumerate(rounds):
        ax = fig.add_subplot(rows, cols, i + 1, sharex=first_ax, sharey=first_ax)
        first_ax = first_ax or ax
        if real is not None and real_idx is not None:
            pr = project(real[real_idx])
            lab = labels[real_idx] if labels is not None else None
            for g, c in zip(groups, colors, strict=True):
                m = lab == g
                big = str(g) in marked  # minority groups: larger points, outlined
                ax.scatter(
                    pr[m, 0],
                    pr[m, 1],
                    s=14 if big else 6,
                    color=c,
                    alpha=0.8 if big else 0.5,
                    edgecolors="black" if big else "none",
                    linewidths=0.4 if big else 0,
                    label=_label(g, marked),
                )
        g_x = gens[r]
        g_x = g_x[np.isfinite(g_x).all(axis=1)]
        if len(g_x) > MAX_POINTS:
            g_x = g_x[rng.choice(len(g_x), MAX_POINTS, replace=False)]
        pg = project(g_x)
        if limits is not None and len(pg):
            (x0, x1), (y0, y1) = limits
            inside = (pg[:, 0] >= x0) & (pg[:, 0] <= x1) & (pg[:, 1] >= y0) & (pg[:, 1] <= y1)
            outside += int((~inside).sum())
        ax.scatter(pg[:, 0], pg[:, 1], s=3, color="black", alpha=0.6, lw=0, label="generated")
        if means is not None and lost_modes.get(r):
            pm = project(means[lost_modes[r]])
            ax.scatter(
                pm[:, 0],
                pm[:, 1],
                s=260,
                facecolors="none",
                edgecolors=FORGOTTEN_COLOR,
                linewidths=1.8,
                zorder=5,
            )
        ax.set_title(f"{word} {r}")
    if first_ax is not None:
        if limits is not None:  # the real data set the axes: a generated outlier does not
            first_ax.set_xlim(*limits[0])
            first_ax.set_ylim(*limits[1])
        handles, names = first_ax.get_legend_handles_labels()
        if any(lost_modes.values()):
            # A proxy: the first panel may circle nothing while a later one does.
            handles.append(
                Line2D(
                    [],
                    [],
                    ls="none",
                    marker="o",
                    ms=9,
                    mfc="none",
                    mec=FORGOTTEN_COLOR,
                    mew=1.8,
                )
            )
            names.append(f"forgotten {mode_column}")
        _legend(fig, handles, names, ctx.group_by or "group", height)
    clipped = (
        f" Axes span the real data; {outside} generated points beyond them are not shown."
        if outside
        else ""
    )
    where = _forgotten_caption(ctx, mode_column, rounds[-1], means, dim == 2)
    caption = (
        f"Generated points (black) over {what or 'no real data'} coloured by "
        f"{ctx.group_by or 'group'}, at each evaluation.{where}{proj_note}{clipped}"
        f"{_minority_note(ctx, ctx.group_by)}{tail}{real_note}"
    )
    return [(fig, caption)]


def _group_rows(run: Run, scope: str, grouping: str, metric: str) -> pd.DataFrame:
    m = run.metrics
    return m[
        (m["scope"] == scope)
        & (m["group_by"] == grouping)
        & (m["group"] != "")
        & (m["metric"] == metric)
    ]


def _lines(
    ax: Axes, df: pd.DataFrame, groups: list[Any], colors: dict[Any, Any], marked: set[str]
) -> None:
    """One line per group over rounds; minority and rare groups thick."""
    for g in groups:
        d = df[df["group"] == g].sort_values("round")
        if len(d):
            big = str(g) in marked
            ax.plot(
                d["round"],
                d["value"],
                marker="o",
                ms=4 if big else 2.5,
                lw=2.6 if big else 1.1,
                alpha=1.0 if big else 0.8,
                color=colors[g],
                label=_label(g, marked),
                zorder=3 if big else 2,
            )


def fig_group_metrics(ctx: _Context) -> list[Panel]:
    if not ctx.views:
        raise _NoData("the run has no per-group metrics")
    panels = []
    for view in ctx.views:
        g = view.grouping
        # Coverage and mass: the forgotten rule's inputs. Not recall (`summary.PER_GROUP`).
        frames = {k: _group_rows(ctx.run, ctx.scope, g, k) for k in ("coverage", "mass")}
        if all(f.empty for f in frames.values()):
            continue
        groups = group_order(pd.concat(frames.values())["group"].unique())
        colors = dict(zip(groups, _colors(len(groups)), strict=True))
        marked = ctx.marked(g)
        height = 3.6 if len(groups) <= MANY_GROUPS else 4.6
        fig = _figure(MAX_WIDTH, height)  # the constrained layout makes room for the legend
        for i, (metric, df) in enumerate(frames.items()):
            ax = fig.add_subplot(1, 2, i + 1)
            _lines(ax, df, groups, colors, marked)
            # Mass is a share of the samples (a 5 % group's is ~0.05): its own scale.
            rate = metric == "coverage"
            ax.set_ylim(-0.03 if rate else 0, 1.03 if rate else None)
            _round_axis(ax, ctx.step_word)
            ax.set_title(f"{metric} per {g}")
        handles, names = fig.axes[0].get_legend_handles_labels()
        _legend(fig, handles, names, g, height)
        panels.append(
            (
                fig,
                f"Per-group coverage and mass (the share of the generated samples in the "
                f"group's k-NN balls) of the {ctx.scope} evaluation over {ctx.step_word}s (one "
                f"line per {g}): a line near 0 is a group the generator forgets."
                f"{_minority_note(ctx, g)}",
            )
        )
    if not panels:
        raise _NoData("the run has no per-group coverage or mass rows")
    return panels


def _group_ticks(
    ax: Axes, positions: Sequence[float], groups: Sequence[Any], marked: set[str]
) -> None:
    """Groups along the x axis; minority and rare ones marked and bold; upright while few."""
    ax.set_xticks(list(positions), [_label(g, marked) for g in groups])
    for tick, g in zip(ax.get_xticklabels(), groups, strict=True):
        if str(g) in marked:
            tick.set_fontweight("bold")
    if len(groups) > 12:
        ax.tick_params(axis="x", labelrotation=90)


def _mark_forgotten_ticks(ax: Axes, groups: Sequence[Any], lost: set[str]) -> None:
    """Forgotten groups' tick labels in red (bold), on whichever axis holds the groups."""
    for tick, g in zip(ax.get_xticklabels(), groups, strict=True):
        if str(g) in lost:
            tick.set_color(FORGOTTEN_COLOR)
            tick.set_fontweight("bold")


def _bars(ax: Axes, x: np.ndarray, values: Any, lost: list[bool]) -> None:
    """One bar per group: blue, or red and hatched for a forgotten group (readable in grey).
    A forgotten group's bar is often 0 high, so its whole column is shaded too: the mark
    must not depend on the bar being visible."""
    for xi, f in zip(x, lost, strict=True):
        if f:
            ax.axvspan(
                xi - 0.45,
                xi + 0.45,
                facecolor=(*matplotlib.colors.to_rgb(FORGOTTEN_COLOR), 0.10),
                edgecolor=(*matplotlib.colors.to_rgb(FORGOTTEN_COLOR), 0.45),
                hatch="//",
                lw=0,
                zorder=0,
            )
    ax.bar(
        x,
        values,
        width=0.7,
        color=[FORGOTTEN_COLOR if f else KEPT_COLOR for f in lost],
        hatch=["//" if f else "" for f in lost],
        edgecolor="white",
        linewidth=0.5,
        zorder=2,
    )


def fig_group_bars(ctx: _Context) -> list[Panel]:
    if not ctx.views or ctx.round_ is None:
        raise _NoData("the run has no per-group metrics")
    panels = []
    for view in ctx.views:
        g = view.grouping
        t = view.table
        if "coverage" not in t.columns:
            continue
        groups = list(t.index)
        lost = [bool(t.loc[k, "forgotten"]) for k in groups]
        names = [str(k) for k, f in zip(groups, lost, strict=True) if f]
        marked = ctx.marked(g)
        x = np.arange(len(groups))
        # Wide enough for the legend above the bars even with two groups.
        fig = _figure(max(5.5, 2.0 + 0.38 * len(groups)), 5.0)
        ax = fig.add_subplot(2, 1, 1)
        _bars(ax, x, t["coverage"].to_numpy(dtype=float), lost)
        ax.axhline(KEEP_COVERAGE, color="black", ls="--", lw=1)
        ax.set_ylim(0, 1.03)
        ax.set_ylabel("coverage")
        ax.grid(axis="y", alpha=0.3)
        _group_ticks(ax, x.tolist(), groups, marked)
        _mark_forgotten_ticks(ax, groups, set(names))
        ax2 = fig.add_subplot(2, 1, 2, sharex=ax)
        if "mass_ratio" in t.columns:
            # The rule's own quantity: mass over (true share × on-support share), 1 = fair.
            ratio = t["mass_ratio"].to_numpy(dtype=float)
            _bars(ax2, x, ratio, lost)
            ax2.axhline(1.0, color="grey", ls=":", lw=1)
            ax2.axhline(FORGOTTEN_MASS_RATIO, color=FORGOTTEN_COLOR, ls="--", lw=1)
            ax2.set_ylabel("mass ratio")
            rule = (
                f"mass ratio (bottom): mass / (its share × the on-support share), dotted 1 a "
                f"fair share, forgotten below {FORGOTTEN_MASS_RATIO:g} (red dashed) unless rare"
            )
            line_label = f"forgotten below {FORGOTTEN_MASS_RATIO:g}"
        elif "mass" in t.columns:
            # Older runs without mass_ratio rows: the mass next to the group's weight.
            ax2.bar(x - 0.2, t["weight"].to_numpy(dtype=float), width=0.4, color="#bbbbbb")
            _bars(ax2, x + 0.2, t["mass"].to_numpy(dtype=float), lost)
            ax2.set_ylabel("mass (grey: weight)")
            rule = (
                "mass (bottom): the share of the samples in the group's k-NN balls, next to "
                "its weight (grey)"
            )
            line_label = ""
        else:
            ax2.set_visible(False)
            rule, line_label = "", ""
        ax2.grid(axis="y", alpha=0.3)
        _group_ticks(ax2, x.tolist(), groups, marked)
        _mark_forgotten_ticks(ax2, groups, set(names))
        ax.tick_params(axis="x", labelbottom=False)
        ax2.set_xlabel(g)
        listed = (
            ", ".join(names)
            if len(names) <= LEGEND_NAMES
            else f"{len(names)} groups (in the caption)"
        ) or "none"
        handles: list[Any] = [
            Patch(color=KEPT_COLOR, label="not forgotten"),
            Patch(
                facecolor=(*matplotlib.colors.to_rgb(FORGOTTEN_COLOR), 0.25),
                hatch="//",
                edgecolor=FORGOTTEN_COLOR,
                label=f"forgotten: {listed}",
            ),
            Line2D(
                [], [], color="black", ls="--", lw=1, label=f"kept: coverage ≥ {KEEP_COVERAGE:g}"
            ),
        ]
        if line_label:
            handles.append(Line2D([], [], color=FORGOTTEN_COLOR, ls="--", lw=1, label=line_label))
        fig.legend(handles=handles, loc="outside upper center", ncols=2)
        lost_text = (
            f"Forgotten (red, hatched column): {g} {', '.join(names)}."
            if names
            else f"No {g} is forgotten."
        )
        panels.append(
            (
                fig,
                f"Per-{g} coverage at the {ctx.scope} evaluation of {ctx.step_word} "
                f"{ctx.round_} (top; dashed: kept at coverage ≥ {KEEP_COVERAGE:g})"
                + (f" and {rule}" if rule else "")
                + f". {lost_text}{_minority_note(ctx, g)}",
            )
        )
    if not panels:
        raise _NoData("the run has no per-group coverage rows")
    return panels


def _heatmap(
    ax: Axes,
    table: pd.DataFrame,
    cmap: str,
    vmin: float | None,
    vmax: float | None,
    fmt: str,
    marked: set[str],
    missing: str = "#dddddd",
) -> Any:
    """`table` as coloured cells with their values written in; NaN cells in `missing`."""
    values = table.to_numpy(dtype=float)
    colors = matplotlib.colormaps[cmap].with_extremes(bad=missing)
    im = ax.imshow(np.ma.masked_invalid(values), cmap=colors, vmin=vmin, vmax=vmax, aspect="auto")
    _group_ticks(ax, range(table.shape[1]), list(table.columns), marked)
    ax.set_yticks(range(table.shape[0]), [str(c) for c in table.index])
    fig = ax.get_figure(root=True)
    assert isinstance(fig, Figure)
    cell_w = fig.get_figwidth() * 0.8 / max(table.shape[1], 1)
    # Numbers in cells only while they fit at the smallest font (about 0.4 in for "0.25").
    if values.size <= 400 and cell_w >= 0.42:
        for (r, c), v in np.ndenumerate(values):
            if np.isfinite(v):
                # Text colour by the cell's luminance, so it reads on any colormap.
                red, green, blue, _ = im.cmap(im.norm(v))
                dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
                ax.text(
                    c,
                    r,
                    format(v, fmt),
                    ha="center",
                    va="center",
                    fontsize=MIN_FONT,
                    color="white" if dark else "black",
                )
    return im


def _no_clients(what: str, ctx: _Context) -> _NoData:
    return _NoData(
        f"no {what} in this run"
        + (" (a centralized run has no clients)" if ctx.scope == "centralized" else "")
    )


def _client_round(ctx: _Context) -> int | None:
    """The round of the clients' coverage rows the figures show: the last evaluation's, or
    the latest the clients have when that one has none (a run cut short mid-evaluation)."""
    m = ctx.run.metrics
    rows = m[(m["scope"] == "client") & (m["metric"] == "eval.coverage")]
    if rows.empty:
        return None
    rounds = set(int(r) for r in rows["round"])
    return ctx.round_ if ctx.round_ in rounds else max(rounds)


def _worst_text(worst: tuple[int, float] | None) -> str:
    if worst is None:
        return ""
    return (
        f" Worst-served client: {worst[0]} ({worst[1]:.0%} of its held-out points in groups "
        "not forgotten)."
    )


def fig_client_coverage(ctx: _Context) -> list[Panel]:
    m = ctx.run.metrics
    rnd = _client_round(ctx)
    if rnd is None:
        raise _no_clients("per-client coverage (eval.coverage)", ctx)
    panels = []
    for view in ctx.views:
        table = client_group_table(m, rnd, "eval.coverage", view.grouping)
        if table.empty:
            continue
        col = str(table.columns.name)
        groups = [str(g) for g in table.columns]
        # The forgotten groups of this very evaluation (the view's are the last one's).
        lost = set(forgotten_sets(m, ctx.scope, rnd).get(view.grouping, []))
        worst = worst_client(m, rnd, view.grouping)
        fig = _figure(2.6 + 0.5 * table.shape[1], min(1.8 + 0.3 * table.shape[0], 12))
        ax = fig.add_subplot(1, 1, 1)
        # Blank (white) where the client holds none of the group: nothing to measure there.
        im = _heatmap(ax, table, "viridis", 0.0, 1.0, ".2f", ctx.marked(view.grouping), "white")
        _mark_forgotten_ticks(ax, list(table.columns), lost)
        for j, g in enumerate(groups):
            if g in lost:  # a red frame round the forgotten group's column
                ax.add_patch(
                    Rectangle(
                        (j - 0.5, -0.5),
                        1.0,
                        table.shape[0],
                        fill=False,
                        edgecolor=FORGOTTEN_COLOR,
                        lw=2.2,
                        clip_on=False,
                    )
                )
        if worst is not None:
            rows = [int(c) for c in table.index]
            ax.set_yticks(
                range(len(rows)), [f"{c} (worst)" if c == worst[0] else str(c) for c in rows]
            )
            for tick, c in zip(ax.get_yticklabels(), rows, strict=True):
                if c == worst[0]:
                    tick.set_color(FORGOTTEN_COLOR)
                    tick.set_fontweight("bold")
        ax.set_xlabel(col + (" (red: forgotten)" if lost else ""))
        ax.set_ylabel("client")
        fig.colorbar(im, ax=ax, label="coverage of its own points")
        held = holders(m, rnd, view.grouping)
        named = [
            f"{g} (held by client{'s' if len(held.get(g, [])) > 1 else ''} "
            f"{', '.join(map(str, held.get(g, [])))})"
            if held.get(g)
            else g
            for g in group_order(lost)
        ]
        lost_text = (
            f" Forgotten {col} groups (red, framed): {', '.join(named)}."
            if lost
            else f" No {col} is forgotten."
        )
        panels.append(
            (
                fig,
                f"Coverage of each client's own held-out points of each {col} it holds, at "
                f"{ctx.step_word} {rnd} (radii from the pooled held-out set, the global "
                f"evaluation's samples). Blank: the client holds none of the group.{lost_text}"
                f"{_worst_text(worst)}{_minority_note(ctx, view.grouping)}",
            )
        )
    if not panels:
        raise _no_clients("per-client, per-group coverage", ctx)
    return panels


MANY_CLIENTS = 20
"""Beyond this many clients, per-client lines are grey, with the worst-served and the median
drawn."""


def _not_red(n: int) -> list[Any]:
    """n distinct colours with the reds left out: red is the worst-served client's alone."""
    pool = _colors(n + 4)
    calm = [c for c in pool if not (c[0] > 0.7 and c[1] < 0.45 and c[2] < 0.45)]
    return (calm + pool)[:n]


def _client_lines(
    ax: Axes, series: pd.DataFrame, title: str, word: str, worst: int | None
) -> list[Any]:
    """Each client's value over rounds (`series`: index round, a column per client), the
    worst-served client (`worst`) thick and red, drawn on top."""
    clients = sorted(series.columns)
    few = len(clients) <= MANY_CLIENTS
    colors = _not_red(len(clients)) if few else ["#999999"] * len(clients)
    for c, color in zip(clients, colors, strict=True):
        s = series[c].dropna()
        if c == worst:
            ax.plot(
                s.index,
                s.to_numpy(),
                marker="o",
                ms=4,
                lw=2.8,
                color=FORGOTTEN_COLOR,
                label=f"client {c} (worst-served)",
                zorder=4,
            )
        elif few:
            ax.plot(s.index, s.to_numpy(), marker="o", ms=2.5, color=color, label=f"client {c}")
        else:
            ax.plot(s.index, s.to_numpy(), color=color, lw=0.6, alpha=0.5)
    if not few:
        ax.plot(series.index, series.median(axis=1), color="black", lw=2, label="median client")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title(title)
    _round_axis(ax, word)
    return clients


def _client_series(m: pd.DataFrame, metric: str, grouping: str) -> pd.DataFrame:
    """One per-client statistic over the evaluations: index round, a column per client."""
    rows = m[
        (m["scope"] == "client")
        & (m["metric"] == metric)
        & (m["group_by"] == grouping)
        & (m["group"] == "")
    ]
    return rows.pivot_table(index="round", columns="client", values="value", aggfunc="first")


def fig_client_served(ctx: _Context) -> list[Panel]:
    m = ctx.run.metrics
    rnd = _client_round(ctx)
    # The client the headline names: the worst-served of the first grouping, at the last
    # evaluation; every panel highlights that one client, so the lines tell one story.
    first = next((v.grouping for v in ctx.views), "")
    worst = worst_client(m, rnd, first) if first else None
    frames: dict[str, tuple[pd.DataFrame, str]] = {}
    coverage = _client_series(m, "eval.coverage", "")
    if not coverage.empty:
        frames["coverage"] = (coverage, "coverage of its own held-out points")
    for view in ctx.views:
        served = _client_series(m, "eval.served_share", view.grouping)
        if served.empty:
            continue
        w = worst_client(m, rnd, view.grouping)
        own = f" (worst: client {w[0]})" if w is not None and view.grouping != first else ""
        frames[view.grouping] = (served, f"served share by {view.grouping}{own}")
    if not frames:
        raise _no_clients("per-client coverage or served share", ctx)
    cols = min(len(frames), 2)
    rows_n = math.ceil(len(frames) / cols)
    height = 3.4 * rows_n
    fig = _figure(MAX_WIDTH, height)
    clients: list[Any] = []
    for i, (series, title) in enumerate(frames.values()):
        ax = fig.add_subplot(rows_n, cols, i + 1)
        clients = _client_lines(ax, series, title, ctx.step_word, worst[0] if worst else None)
    handles, names = fig.axes[0].get_legend_handles_labels()
    _legend(fig, handles, names, "client", height)
    red = (
        f" Red, thick: the worst-served client at {ctx.step_word} {rnd} by {first}, client "
        f"{worst[0]} ({worst[1]:.0%} of its held-out points in groups not forgotten)."
        if worst is not None
        else ""
    )
    many = (
        f" With {len(clients)} clients each is a grey line; the median is drawn in black."
        if len(clients) > MANY_CLIENTS
        else ""
    )
    return [
        (
            fig,
            "Each client at every evaluation: the coverage of its own held-out points (radii "
            "from the pooled held-out set, the global evaluation's samples) and its served "
            f"share — the share of its held-out points in groups not forgotten.{red}{many}",
        )
    ]


def fig_weights(ctx: _Context) -> list[Panel]:
    m = ctx.run.metrics
    rows = m[(m["scope"] == "client") & (m["metric"] == "fed.weight") & (m["group"] == "")]
    if rows.empty:
        raise _NoData(
            "the metrics table has no fed.weight rows (each round's client weights, as the "
            "strategy or protocol combined the replies): a centralized run, a strategy that "
            "does not say how it weighs clients (a median, Krum, q-FedAvg) or a run recorded "
            "before the loop wrote them"
        )
    table = rows.pivot_table(index="round", columns="client", values="value", aggfunc="first")
    table = table.reindex(columns=sorted(table.columns)).fillna(0.0)
    height = 3.6
    fig = _figure(MAX_WIDTH, height)
    ax = fig.add_subplot(1, 1, 1)
    colors = _colors(len(table.columns))
    ax.stackplot(
        table.index,
        table.to_numpy().T,
        labels=[f"client {c}" for c in table.columns],
        colors=colors,
        alpha=0.9,
    )
    ax.set_ylim(0, max(1.0, float(table.sum(axis=1).max())))
    ax.set_ylabel("weight (stacked)")
    ax.set_title("client weights per round")
    _round_axis(ax, ctx.step_word)
    handles, names = ax.get_legend_handles_labels()
    if len(handles) <= 40:
        _legend(fig, handles, names, "client", height)
    return [
        (
            fig,
            "Each round's weight of every client in the aggregate (fed.weight; a client not "
            "in the round has 0): FedAvg gives n_k / Σ n, the fairness-aware rules move weight "
            "to the clients they favour.",
        )
    ]


def fig_partition(ctx: _Context) -> list[Panel]:
    p = ctx.run.path / "partition.csv"
    if not p.is_file():
        raise _NoData("the run folder has no partition.csv")
    part = pd.read_csv(p, dtype={"group": str})
    if part.empty or set(part["client"].unique()) <= {-1}:
        raise _NoData("a centralized run trains on one data set: there is no partition")
    col = ctx.group_by if ctx.group_by in set(part["group_by"]) else str(part["group_by"].iloc[0])
    part = part[part["group_by"] == col]
    table = part.pivot_table(index="client", columns="group", values="n", aggfunc="sum")
    table = table.reindex(index=group_order(table.index), columns=group_order(table.columns))
    table = table.fillna(0)
    fig = _figure(2.4 + 0.5 * table.shape[1], min(1.6 + 0.3 * table.shape[0], 12))
    ax = fig.add_subplot(1, 1, 1)
    im = _heatmap(ax, table, "Blues", 0.0, None, ".0f", ctx.marked(col))
    ax.set_xlabel(col)
    ax.set_ylabel("client")
    fig.colorbar(im, ax=ax, label="points")
    return [(fig, f"Points of each {col} on each client (partition.csv).")]


_TRAIN_PANELS: tuple[tuple[str, Callable[[str], bool]], ...] = (
    ("losses", lambda k: "loss" in k or k == "train.penalty"),
    ("gradient norms", lambda k: "grad_norm" in k),
    ("Lipschitz estimates", lambda k: k.startswith("train.lipschitz.")),
    ("critic outputs", lambda k: True),
)


def fig_training(ctx: _Context) -> list[Panel]:
    m = ctx.run.metrics
    federated = ctx.scope != "centralized"
    scope = "client" if federated else ctx.scope
    rows = m[(m["scope"] == scope) & (m["group"] == "") & m["metric"].str.startswith("train.")]
    if rows.empty:
        raise _NoData("the run recorded no train.* metrics")
    # Federated: one value per round, the mean over the clients that trained in it.
    series = rows.groupby(["metric", "round"])["value"].mean()
    panels: dict[str, list[str]] = {title: [] for title, _ in _TRAIN_PANELS}
    for key in group_order(series.index.get_level_values(0).unique()):
        title = next(t for t, match in _TRAIN_PANELS if match(key))
        panels[title].append(key)
    panels = {t: ks for t, ks in panels.items() if ks}
    cols = min(len(panels), 2)
    rows_n = math.ceil(len(panels) / cols)
    fig = _figure(MAX_WIDTH, 3.4 * rows_n)
    for i, (title, keys) in enumerate(panels.items()):
        ax = fig.add_subplot(rows_n, cols, i + 1)
        positive = True
        lo, hi = math.inf, -math.inf
        for key in keys:
            s = series.loc[key].dropna()
            ax.plot(s.index, s.to_numpy(), marker="o", ms=2, label=key.removeprefix("train."))
            if len(s):
                positive &= bool((s > 0).all())
                lo, hi = min(lo, float(s.min())), max(hi, float(s.max()))
        # Layer-product bounds dwarf the local estimates by orders of magnitude: log scale.
        if positive and lo > 0 and hi / lo > 100:
            ax.set_yscale("log")
        ax.set_title(title)
        _round_axis(ax, ctx.step_word)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    how = "mean over the clients that trained in each round" if federated else "at each step"
    return [(fig, f"Training statistics ({how}).")]


def fig_fairness(ctx: _Context) -> list[Panel]:
    m = ctx.run.metrics
    stats = ("coverage", "precision")  # not recall: `summary.GAP_METRICS`
    keys = [f"{s}.{k}" for s in stats for k in ("difference", "ratio")]
    rows = m[(m["scope"] == ctx.scope) & (m["group"] == "") & m["metric"].isin(keys)]
    names = [v.grouping for v in ctx.views if v.grouping in set(rows["group_by"])]
    if not names:
        raise _NoData("the run has no coverage.difference / coverage.ratio rows")
    fig = _figure(MAX_WIDTH, 3.6)
    colors = dict(zip(names, _colors(len(names)), strict=True))
    for i, stat in enumerate(stats):
        ax = fig.add_subplot(1, 2, i + 1)
        for g in names:
            for kind, style in (("difference", "-o"), ("ratio", "--s")):
                s = rows[(rows["group_by"] == g) & (rows["metric"] == f"{stat}.{kind}")]
                s = s.sort_values("round")
                ax.plot(s["round"], s["value"], style, ms=3, color=colors[g], label=f"{g} {kind}")
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(f"{stat}: max − min and min / max")
        _round_axis(ax, ctx.step_word)
    handles, labels = fig.axes[0].get_legend_handles_labels()
    _legend(fig, handles, labels, "grouping", 3.6)
    return [
        (
            fig,
            "Fairness gaps of every grouping over rounds: difference (max − min, 0 is fair, "
            "solid) and ratio (min / max, 1 is fair, dashed; missing when max is 0). A group "
            "the generator never reaches counts as precision 0: it is the worst group, not "
            "left out.",
        )
    ]


def fig_against(ctx: _Context) -> list[Panel]:
    if ctx.against is None:
        raise _NoData("no second run to compare with (fedgan report RUN --against OTHER_RUN)")
    other = ctx.against
    other_scope = main_scope(other.metrics) if len(other.metrics) else ""
    theirs_lost = (
        forgotten_sets(other.metrics, other_scope, last_round(other.metrics, other_scope, "recall"))
        if other_scope
        else {}
    )
    panels = []
    for view in ctx.views:
        g = view.grouping
        mine = _last_groups(ctx.run, ctx.scope, g)
        theirs = _last_groups(other, other_scope, g)
        if mine.empty or theirs.empty:
            continue
        groups = group_order(set(mine.index) | set(theirs.index))
        marked = ctx.marked(g)
        fig = _figure(min(3.0 + 0.45 * len(groups) * 2, MAX_WIDTH), 4.4)
        x = np.arange(len(groups))
        for i, metric in enumerate(("coverage", "mass")):  # not recall: `summary.PER_GROUP`
            ax = fig.add_subplot(2, 1, i + 1)
            for j, (name, table) in enumerate(zip(ctx.names, (mine, theirs), strict=True)):
                v = table.reindex(groups)[metric] if metric in table.columns else np.nan
                ax.bar(
                    x + (j - 0.5) * 0.4, v, width=0.4, label=name, color=("#2166ac", "#f4a582")[j]
                )
            _group_ticks(ax, x.tolist(), groups, marked)
            _mark_forgotten_ticks(ax, groups, set(ctx.forgotten(g)))
            ax.set_ylim(0, 1.03 if metric == "coverage" else None)
            ax.set_ylabel(metric)
            ax.grid(axis="y", alpha=0.3)
        handles, labels = fig.axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside upper center", ncols=2)
        panels.append(
            (
                fig,
                f"Per-{g} coverage and mass at the last evaluation of {ctx.names[0]} "
                f"({ctx.run.path}) and {ctx.names[1]} ({other.path}). Forgotten by "
                f"{ctx.names[0]} (red labels): {', '.join(ctx.forgotten(g)) or 'none'}; by "
                f"{ctx.names[1]}: {', '.join(theirs_lost.get(g, [])) or 'none'}."
                f"{_minority_note(ctx, g)}",
            )
        )
    if not panels:
        raise _NoData(f"{other.path} shares no evaluated grouping with this run")
    return panels


def _last_groups(run: Run, scope: str, grouping: str) -> pd.DataFrame:
    """Per-group table (coverage, mass, …) of a run's last evaluation (index: group labels)."""
    rnd = last_round(run.metrics, scope, "recall")
    if rnd is None:
        return pd.DataFrame()
    return group_table(run.metrics, scope, rnd, grouping)


IMAGE_ROWS = 20
"""At most this many groups (forgotten first) or clients (worst served first) drawn as rows."""
IMAGES_PER_ROW = 8


def _tiles(x: np.ndarray, shape: tuple[int, int, int], covered: np.ndarray | None) -> np.ndarray:
    """One row of IMAGES_PER_ROW tiles, RGB [h+2, n·(w+2), 3] in [0, 1]: each image in a
    1-pixel frame — red where `covered` is False (a real image the generator does not
    cover), light grey otherwise; empty slots white."""
    c, h, w = shape
    red = np.array(matplotlib.colors.to_rgb(FORGOTTEN_COLOR))
    row = np.ones((h + 2, IMAGES_PER_ROW * (w + 2), 3))
    for i in range(min(len(x), IMAGES_PER_ROW)):
        img = np.clip((x[i].reshape(c, h, w) + 1.0) / 2.0, 0.0, 1.0)
        rgb = np.repeat(img, 3, axis=0) if c == 1 else img[:3]
        tile = np.empty((h + 2, w + 2, 3))
        tile[:] = red if covered is not None and not covered[i] else 0.85
        tile[1:-1, 1:-1] = rgb.transpose(1, 2, 0)
        row[:, i * (w + 2) : (i + 1) * (w + 2)] = tile
    return row


def _image_rows(
    rows: list[tuple[str, np.ndarray]], titles: tuple[str, ...], shape: tuple[int, int, int]
) -> Figure:
    """Rows of tile strips (each `_tiles`' width × len(titles) blocks) labelled on the left."""
    c, h, w = shape
    strip_h = h + 2
    fig = _figure(1.2 + 1.1 * len(titles) * IMAGES_PER_ROW * (w + 2) / 80, 0.9 + 0.28 * len(rows))
    ax = fig.add_subplot(1, 1, 1)
    canvas = np.concatenate([r for _, r in rows], axis=0)
    ax.imshow(canvas, interpolation="nearest", aspect="equal")
    ax.set_yticks([strip_h * (i + 0.5) for i in range(len(rows))], [t for t, _ in rows])
    block = IMAGES_PER_ROW * (w + 2)
    ax.set_xticks([block * (i + 0.5) for i in range(len(titles))], list(titles))
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    return fig


def _image_views(ctx: _Context) -> Any:
    """The pictures of the last evaluation (`simulator.image_views`), or _NoData."""
    from fedgan.simulator.image_views import image_views

    files = _sample_files(ctx.run.path)
    if not files:
        raise _NoData("no generated samples were saved (samples/ is empty)")
    if not ctx.run.scenario.get("data") or ctx.round_ is None:
        raise _NoData("the run has no evaluation")
    fake = np.load(files[max(files)])
    try:
        return max(files), image_views(ctx.run.scenario, fake, ctx.group_by or None)
    except ValueError as exc:
        raise _NoData(str(exc)) from None


def fig_image_groups(ctx: _Context) -> list[Panel]:
    r, views = _image_views(ctx)
    lost = set(ctx.forgotten(views.grouping))
    order = sorted(views.groups, key=lambda g: (g.group not in lost, views.groups.index(g)))
    rows = []
    for g in order[:IMAGE_ROWS]:
        strip = np.concatenate(
            [
                _tiles(g.real, views.image_shape, g.covered),
                _tiles(g.generated, views.image_shape, None),
            ],
            axis=1,
        )
        mark = " (forgotten)" if g.group in lost else ""
        rows.append((f"{views.grouping} {g.group}{mark}: {g.landed}", strip))
    fig = _image_rows(
        rows, ("held-out real images", "generated images that land in it"), views.image_shape
    )
    cut = len(views.groups) - len(rows)
    tail = f" {cut} other groups not drawn (forgotten groups come first)." if cut > 0 else ""
    caption = (
        f"Per {views.grouping}, at {ctx.step_word} {r}: held-out real images (left; framed red: "
        "not covered — no generated sample inside its k-NN ball) and generated images that land "
        "in the group (right: inside the ball of one of its held-out images, what its mass "
        f"counts); the number after each label is how many samples land there. Compared in "
        f"{views.space}, as the tables are.{tail}"
    )
    return [(fig, caption)]


def fig_image_clients(ctx: _Context) -> list[Panel]:
    r, views = _image_views(ctx)
    if not views.clients:
        raise _NoData("a centralized run has no clients")
    order = sorted(views.clients, key=lambda c: (c.share, c.client))[:IMAGE_ROWS]
    rows = [
        (f"client {c.client}: {c.share:.0%}", _tiles(c.real, views.image_shape, c.covered))
        for c in order
    ]
    fig = _image_rows(rows, ("the client's held-out images",), views.image_shape)
    cut = len(views.clients) - len(rows)
    tail = f" {cut} better-served clients not drawn." if cut > 0 else ""
    caption = (
        f"Per client, at {ctx.step_word} {r}, worst served first: its held-out images, framed red "
        "where the global generator does not cover them (radii from the pooled held-out set, the "
        "client × group table's test); the share after each client is its covered share of all "
        f"its held-out images. Compared in {views.space}.{tail}"
    )
    return [(fig, caption)]


_FIGURES: tuple[tuple[str, str, Callable[[_Context], list[Panel]]], ...] = (
    ("fig-samples", "Real vs generated samples", fig_samples),
    ("fig-image-groups", "Images per group: covered, forgotten, generated", fig_image_groups),
    ("fig-image-clients", "Images per client: what the generator covers", fig_image_clients),
    ("fig-group-bars", "Who is forgotten: per-group coverage and mass", fig_group_bars),
    ("fig-group-metrics", "Per-group recall and coverage over rounds", fig_group_metrics),
    ("fig-against", "Against another run: per-group recall and coverage", fig_against),
    ("fig-fairness", "Fairness gaps", fig_fairness),
    ("fig-client-coverage", "Client × group coverage", fig_client_coverage),
    ("fig-client-served", "Per-client coverage and served share", fig_client_served),
    ("fig-weights", "What the strategy did: client weights per round", fig_weights),
    ("fig-partition", "Partition", fig_partition),
    ("fig-training", "Training: losses, gradient norms, Lipschitz estimates", fig_training),
)


# ---- tables ----------------------------------------------------------------------------------
def _table(
    header: Sequence[str] | None,
    rows: Sequence[Sequence[str]],
    id_: str,
    marked: Sequence[bool] | None = None,
) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header or ())
    thead = f"<thead><tr>{head}</tr></thead>" if header else ""
    flags = marked or [False] * len(rows)
    body = "".join(
        ('<tr class="minority">' if flag else "<tr>")
        + "".join(f"<td>{html.escape(c)}</td>" for c in r)
        + "</tr>"
        for r, flag in zip(rows, flags, strict=True)
    )
    return f'<table id="{id_}">{thead}<tbody>{body}</tbody></table>'


def _diagnosis(run_dir: Path) -> pd.DataFrame:
    p = run_dir / "diagnosis.csv"
    if not p.is_file() or p.stat().st_size == 0:
        return pd.DataFrame(columns=["round", "scope", "client", "label", "reason"])
    return pd.read_csv(p).fillna("")


def against_text(ctx: _Context) -> str:
    """What the `--against` run keeps of the groups this run forgets, and what it forgets, at
    both runs' last evaluations: "Against centralized twin (step 4000): it forgets mode none;
    of this run's forgotten modes it keeps (coverage ≥ 0.3) 0, 1." ('' without a second run).
    Both sets are read through `forgotten_sets`, "kept" is `forgetting.kept`."""
    other = ctx.against
    if other is None:
        return ""
    name = ctx.names[1]
    om = other.metrics
    oscope = main_scope(om) if len(om) else ""
    ornd = last_round(om, oscope, "recall") if len(om) else None
    if ornd is None:
        return f"Against {name}: it has no evaluation yet."
    mine = forgotten_sets(ctx.run.metrics, ctx.scope, ctx.round_)
    theirs = forgotten_sets(om, oscope, ornd)
    sentences = []
    for grouping in dict.fromkeys([*mine, *theirs]):
        if grouping not in theirs:
            sentences.append(f"it does not evaluate {grouping}")
            continue
        text = f"it forgets {grouping} {', '.join(theirs[grouping]) or 'none'}"
        lost = mine.get(grouping, [])
        if lost:
            table = group_table(om, oscope, ornd, grouping)
            cov = table["coverage"] if "coverage" in table.columns else pd.Series(dtype=float)
            keeps = [g for g in lost if g in cov.index and kept(float(cov[g]))]
            text += (
                f"; of this run's forgotten {grouping}s it keeps (coverage ≥ "
                f"{KEEP_COVERAGE:g}) {', '.join(keeps) or 'none'}"
            )
        sentences.append(text)
    word = "step" if oscope == "centralized" else "round"
    body = ". ".join(t[:1].upper() + t[1:] if i else t for i, t in enumerate(sentences))
    return f"Against {name} ({word} {ornd}): {body or 'no groups evaluated'}."


def story_section(ctx: _Context) -> str:
    """The opening paragraph: what happened at the last evaluation (`summary.story`, written
    from the numbers) and, with `--against`, what the other run does with the same groups."""
    if ctx.round_ is None:
        return ""
    text = story(ctx.run.metrics, ctx.round_)
    other = against_text(ctx)
    return (
        f'<p class="story" id="story">{html.escape(text)}'
        + (f'<br><span id="story-against">{html.escape(other)}</span>' if other else "")
        + "</p>"
    )


def headline_section(ctx: _Context) -> str:
    m = ctx.run.metrics
    rnd = last_round(m, ctx.scope, "recall")
    if rnd is None:
        return '<p class="note" id="headline-note">No evaluation has finished yet.</p>'
    rows = headline_rows(headline(m, rnd))
    out = [
        f"<p>{html.escape(ctx.scope)} evaluation at {ctx.step_word} {rnd} "
        "(held-out real data).</p>",
        _table(["metric", "value"], rows, "headline"),
    ]
    diag = _diagnosis(ctx.run.path)
    if len(diag):
        # The whole-population row of this evaluation (not a client's): its label and every
        # failure its reason lists, most severe first, as the diagnosis wrote them.
        diag = diag[
            (diag["scope"] == ctx.scope)
            & (diag["round"] == rnd)
            & (pd.to_numeric(diag["client"], errors="coerce").fillna(-1) < 0)
        ]
    if len(diag):
        d = diag.iloc[-1]
        out.append(
            f'<p class="diag" id="headline-diagnosis">diagnosis: '
            f"<b>{html.escape(str(d['label']))}</b> — {html.escape(str(d['reason']))}</p>"
        )
    for k, view in enumerate(ctx.views):
        suffix = "" if k == 0 else f"-{k + 1}"
        header, body, marked = group_view_rows(view)
        out.append(f"<h3>Per {html.escape(view.grouping)}</h3>")
        out.append(_table(header, body, f"per-group{suffix}", marked))
        out.append(
            '<p class="legend">' + html.escape(legend_text(view)).replace("\n", "<br>") + "</p>"
        )
        g_header, g_body = gap_rows(view)
        out.append(_table(g_header, g_body, f"gaps{suffix}"))
        out.append(_fidelity_html(ctx, rnd, view.grouping, suffix))
    return "\n".join(out)


def _fidelity_html(ctx: _Context, rnd: int, grouping: str, suffix: str) -> str:
    """A table's per-column fidelity (SDMetrics' KS / TV complements) overall and per group of
    `grouping`; "" for data that is not a table."""
    t = fidelity_table(ctx.run.metrics, ctx.scope, rnd, grouping)
    if t.empty:
        return ""
    header = ["column", *(str(c) for c in t.columns)]
    body = [
        [str(col), *("n/a" if pd.isna(v) else f"{float(v):.3f}" for v in t.loc[col])]
        for col in t.index
    ]
    return (
        f"<h4>Fidelity per column and {html.escape(grouping)}</h4>"
        + _table(header, body, f"fidelity{suffix}")
        + '<p class="legend">1 − the Kolmogorov–Smirnov statistic for numbers, 1 − the total '
        "variation distance for categories (SDMetrics' KSComplement / TVComplement): 1 = the "
        "generated marginal matches the real one. A group's generated rows are those that "
        "declare it by their generated value, else those nearest its held-out rows; n/a: no "
        "generated row. A description of fidelity, not the forgotten rule.</p>"
    )


def diagnosis_section(ctx: _Context) -> str:
    diag = _diagnosis(ctx.run.path)
    if diag.empty:
        return '<p class="note" id="diagnosis-note">The run folder holds no diagnosis.</p>'
    diag = diag.sort_values(["round", "scope", "client"], kind="stable")
    rows = [
        (
            str(r["round"]),
            str(r["scope"]) + ("" if int(r["client"]) < 0 else f" {int(r['client'])}"),
            str(r["label"]),
            str(r["reason"]),
        )
        for _, r in diag.iterrows()
    ]
    return _table([ctx.step_word, "scope", "label", "reason"], rows, "diagnosis")


def events_section(ctx: _Context) -> str:
    # Start/finish lines say nothing a reader needs; failures, drops and warnings do.
    ev = [e for e in ctx.run.events if e.get("kind") not in ("run_started", "run_finished")]
    if not ev:
        return '<p class="note" id="events-note">No failures, drops or warnings were logged.</p>'
    rows = []
    for e in ev[:100]:
        rest = {k: v for k, v in e.items() if k not in ("time", "kind")}
        rows.append((str(e.get("kind", "")), ", ".join(f"{k}={v}" for k, v in rest.items())))
    more = f"<p>{len(ev) - 100} more events in events.jsonl.</p>" if len(ev) > 100 else ""
    return _table(["event", "details"], rows, "events") + more


# ---- page ------------------------------------------------------------------------------------
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:1150px;
 color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ccc;padding-bottom:.2em;
 margin-top:1.8em}h3{font-size:1.05em;margin:1.2em 0 .3em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f3f3f3}
tr.minority td{background:#fff3cd;font-weight:600}
figure{margin:1em 0}figure img{max-width:100%;height:auto}
figcaption{font-size:.9em;color:#555;margin-top:.3em}
.note{color:#666;font-style:italic}.error{color:#a00}.diag{background:#fff6e0;padding:.4em .6em}
.legend{font-size:.85em;color:#555;margin:.2em 0 .6em}
.story{font-size:1.1em;background:#f0f4fa;border-left:4px solid #2166ac;padding:.5em .8em}
code{background:#f3f3f3;padding:0 .2em}
"""

# Marks every decoded image, and the scale it is shown at (shown / native width: below 1 the
# browser shrank it, and its 9-pt text with it), and writes #images-ok once the page has loaded,
# so a headless browser (the tests, CI) can prove that all embedded figures really render.
IMAGE_CHECK_JS = """
window.addEventListener("load", function () {
  var imgs = document.getElementsByTagName("img"), ok = 0;
  for (var i = 0; i < imgs.length; i++) {
    var good = imgs[i].complete && imgs[i].naturalWidth > 0;
    imgs[i].setAttribute("data-loaded", good ? "1" : "0");
    if (good) {
      var scale = imgs[i].getBoundingClientRect().width / imgs[i].naturalWidth;
      imgs[i].setAttribute("data-scale", scale.toFixed(3));
    }
    if (good) ok++;
  }
  var d = document.createElement("div");
  d.id = "images-ok"; d.hidden = true;
  d.setAttribute("data-total", String(imgs.length)); d.textContent = String(ok);
  document.body.appendChild(d);
});
"""


def context(run: Run, against: Run | None = None) -> _Context:
    """What every section reads: the run, its main scope, its per-group views at the last
    evaluation and, with `against`, the other run and both runs' short labels."""
    m = run.metrics
    scope = main_scope(m) if len(m) else "centralized"
    rnd = last_round(m, scope, "recall") if len(m) else None
    views = group_views(m, scope, rnd, run.scenario) if rnd is not None else []
    ctx = _Context(
        run=run,
        scope=scope,
        step_word="step" if scope == "centralized" else "round",
        views=views,
        round_=rnd,
        against=against,
    )
    if against is not None:
        ctx.names = _names(run, against)
    return ctx


def _names(run: Run, other: Run) -> tuple[str, str]:
    """The two runs as `compare` labels them ("federated (fedavg)", "centralized twin")."""
    from fedgan.simulator.compare import IGNORED, flatten, labels

    configs = [
        {k: v for k, v in flatten(r.scenario).items() if k not in IGNORED} for r in (run, other)
    ]
    mine, theirs = labels(configs, [run.scenario, other.scenario])
    if not mine or not theirs or mine == theirs:  # same configuration: another seed, say
        return f"this run (seed {run.scenario.get('seed')})", (
            f"other run (seed {other.scenario.get('seed')})"
        )
    return mine, theirs


@dataclass(frozen=True)
class Note:
    """What replaces a figure section: why it is not shown (`error`: drawing it failed)."""

    text: str
    error: bool = False


def figures(ctx: _Context) -> list[tuple[str, str, list[Panel] | Note]]:
    """(id, title, panels or the note that replaces them) of every figure section."""
    out: list[tuple[str, str, list[Panel] | Note]] = []
    with matplotlib.rc_context(FONTS):
        for fig_id, title, draw in _FIGURES:
            try:
                out.append((fig_id, title, draw(ctx)))
            except _NoData as exc:
                out.append((fig_id, title, Note(f"Not shown: {exc}.")))
            except Exception as exc:  # odd data in one section must not cost the whole report
                out.append(
                    (fig_id, title, Note(f"Could not be drawn: {type(exc).__name__}: {exc}", True))
                )
    return out


def render(run: Run, against: Run | None = None) -> str:
    """The report of a loaded run as one HTML string (`against`: a second run overlaid)."""
    ctx = context(run, against)
    scope = ctx.scope
    sc = run.scenario
    name = str(sc.get("name", run.path.name))
    data = sc.get("data") or {}
    facts = [
        ("run folder", str(run.path)),
        ("description", str(sc.get("description", ""))),
        ("dataset", f"{data.get('dataset', '?')} (n = {data.get('n_samples') or 'all'})"),
        ("seed", str(sc.get("seed", ""))),
        ("main scope", scope),
    ]
    if scope != "centralized":
        part = sc.get("partition") or {}
        fed = sc.get("federation") or {}
        facts.append(
            (
                "federation",
                f"{part.get('n_clients', '?')} clients, {part.get('name', '?')} partition, "
                f"{fed.get('rounds', '?')} rounds, strategy "
                f"{(sc.get('strategy') or {}).get('name', '?')}",
            )
        )
    if against is not None:
        facts.append(("against", f"{against.path} ({ctx.names[1]}; this run: {ctx.names[0]})"))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>fedgan report: {html.escape(name)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>fedgan report: {html.escape(name)}</h1>",
        story_section(ctx),
        _table(None, facts, "facts"),
        "<h2>Last evaluation</h2>",
        headline_section(ctx),
    ]
    for fig_id, title, drawn in figures(ctx):
        parts.append(f'<h2 id="{fig_id}-section">{html.escape(title)}</h2>')
        if isinstance(drawn, Note):
            cls = "note error" if drawn.error else "note"
            parts.append(f'<p class="{cls}" id="{fig_id}-note">{html.escape(drawn.text)}</p>')
            continue
        for k, (fig, caption) in enumerate(drawn):
            id_ = fig_id if k == 0 else f"{fig_id}-{k + 1}"
            parts.append(
                f'<figure id="{id_}"><img alt="{html.escape(title)}" '
                f'src="data:image/png;base64,{_png(fig)}">'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
    parts += [
        "<h2>Diagnosis per evaluation</h2>",
        diagnosis_section(ctx),
        "<h2>Events</h2>",
        events_section(ctx),
        f"<script>{IMAGE_CHECK_JS}</script>",
        "</body></html>",
    ]
    return "\n".join(parts)


def write_report(
    run_dir: str | Path, out: Path | None = None, against: str | Path | None = None
) -> Path:
    """Write the run's self-contained `report.html` (default: into the run folder), with
    `against`'s forgotten and kept groups in the opening story and its per-group recall and
    coverage overlaid when given; its path."""
    run = load_run(run_dir)
    other = load_run(against) if against is not None else None
    target = Path(out) if out is not None else run.path / "report.html"
    atomic_write_text(target, render(run, other))
    return target
