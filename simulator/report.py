"""A self-contained HTML report of one run folder (`report.html`).

Everything is inline — figures are base64 PNGs drawn with matplotlib's Agg canvas, the CSS is a
`<style>` block — so the file opens offline, attaches to an e-mail and survives being moved.
Every section reads what the run folder holds; a section whose data the run lacks (no clients in
a centralized run, no samples, a dataset that cannot be re-created) becomes a short note.
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
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from simulator.store import Run, atomic_write_text, load_run
from simulator.summary import (
    PER_GROUP,
    client_group_table,
    format_value,
    group_order,
    group_table,
    headline,
    headline_rows,
    last_round,
    main_scope,
)

FIGURE_IDS = (
    "fig-samples",
    "fig-group-metrics",
    "fig-client-recall",
    "fig-partition",
    "fig-training",
    "fig-fairness",
)
"""Figure ids of a full report; a missing one is replaced by `<p id="<id>-note">`."""

MAX_SAMPLE_PANELS = 8
"""Evaluations drawn in the samples figure (evenly spaced, always the last): keeps it legible."""
MAX_POINTS = 2000
"""Points per scatter, real and generated: more only slows Agg and hides the density."""
IMAGE_GRID = 8
"""Image grids are IMAGE_GRID × IMAGE_GRID samples."""
DPI = 80


class _NoData(Exception):
    """A section cannot be drawn from this run; the message becomes the note."""


@dataclass
class _Context:
    run: Run
    scope: str
    step_word: str
    group_by: str
    notes: list[str] = field(default_factory=list)


# ---- small helpers ---------------------------------------------------------------------------
def _figure(width: float, height: float) -> Figure:
    # A bare Figure with its own Agg canvas: no pyplot, so no global backend or figure registry
    # is touched in a process (a notebook, the CLI) that may use matplotlib for other things.
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _first_group_column(metrics: pd.DataFrame, scope: str) -> str:
    cols = metrics.loc[(metrics["scope"] == scope) & (metrics["group_by"] != ""), "group_by"]
    return str(cols.iloc[0]) if len(cols) else ""


def _round_axis(ax: Axes, word: str) -> None:
    """Rounds and steps are integers: no 2.25 ticks."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(word)
    ax.grid(alpha=0.3)


def _colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


# ---- figures ---------------------------------------------------------------------------------
def _sample_files(run_dir: Path) -> dict[int, Path]:
    out: dict[int, Path] = {}
    for p in sorted((run_dir / "samples").glob("round-*.npy")):
        try:
            out[int(p.stem.split("-", 1)[1])] = p
        except ValueError:
            continue  # a stray temporary file of an interrupted write
    return out


def _pick_rounds(rounds: Sequence[int], k: int) -> list[int]:
    if len(rounds) <= k:
        return list(rounds)
    idx = np.unique(np.linspace(0, len(rounds) - 1, k).round().astype(int))
    return [rounds[i] for i in idx]


def _real_data(ctx: _Context) -> tuple[np.ndarray, np.ndarray | None, Any, str]:
    """(held-out X, labels of the group column, image_shape, description) re-created from the
    resolved scenario with the run's own seed derivation, so it is the set the run scored."""
    from simulator.centralized import stratified_split
    from simulator.data import load_dataset
    from simulator.seeding import derive_seed, numpy_rng

    sc = ctx.run.scenario
    data = sc.get("data") or {}
    seed = int(sc.get("seed", 0))
    ds = load_dataset(
        data["dataset"], data.get("n_samples"), derive_seed(seed, "data"), data.get("params") or {}
    )
    what = "real data"
    holdout = data.get("holdout")
    if holdout:
        _, held = stratified_split(ds, float(holdout), numpy_rng(seed, "split"))
        ds = ds.subset(held)
        what = "held-out real data"
    col = ctx.group_by if ctx.group_by in ds.groups.columns else ds.group_column
    return ds.X, ds.labels(col), ds.image_shape, what


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


def fig_samples(ctx: _Context) -> tuple[str, str]:
    files = _sample_files(ctx.run.path)
    if not files:
        raise _NoData("no generated samples were saved (samples/ is empty)")
    rounds = _pick_rounds(sorted(files), MAX_SAMPLE_PANELS)
    try:
        real, labels, image_shape, what = _real_data(ctx)
        real_note = ""
    except Exception as exc:  # any plug-in/table dataset may be unavailable here; still draw
        real, labels, image_shape, what = None, None, None, ""
        real_note = f" The real data could not be re-created ({type(exc).__name__}: {exc})."
    rng = np.random.default_rng(0)
    gens = {r: np.load(files[r]) for r in rounds}
    dim = next(iter(gens.values())).shape[1]
    if real is not None and real.shape[1] != dim:
        real_note = f" The re-created real data have d = {real.shape[1]}, the samples d = {dim}."
        real, labels, image_shape, what = None, None, None, ""
    skipped = len(files) - len(rounds)
    tail = f" ({skipped} other evaluations not drawn.)" if skipped else ""
    word = ctx.step_word

    if image_shape is not None and math.prod(image_shape) == dim:
        panels = ([("real", real)] if real is not None else []) + [
            (f"{word} {r}", gens[r]) for r in rounds
        ]
        cols = min(4, len(panels))
        rows = math.ceil(len(panels) / cols)
        fig = _figure(3.2 * cols, 3.4 * rows)
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
            ax.set_title(title, fontsize=9)
            ax.set_axis_off()
        caption = (
            f"Generated images at each evaluation ({IMAGE_GRID}×{IMAGE_GRID} first samples), "
            f"next to {what or 'no real data'}.{tail}{real_note}"
        )
        return _png(fig), caption

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

    real_idx = (
        rng.choice(len(real), min(len(real), MAX_POINTS), replace=False)
        if real is not None
        else None
    )
    cols = min(4, len(rounds))
    rows = math.ceil(len(rounds) / cols)
    fig = _figure(3.2 * cols + 1.2, 3.2 * rows)
    groups = group_order(np.unique(labels)) if labels is not None else []
    colors = _colors(len(groups))
    first_ax: Axes | None = None
    for i, r in enumerate(rounds):
        ax = fig.add_subplot(rows, cols, i + 1, sharex=first_ax, sharey=first_ax)
        first_ax = first_ax or ax
        if real is not None and real_idx is not None:
            pr = project(real[real_idx])
            lab = labels[real_idx] if labels is not None else None
            for g, c in zip(groups, colors, strict=True):
                m = lab == g
                ax.scatter(pr[m, 0], pr[m, 1], s=6, color=c, alpha=0.5, label=f"{g}", lw=0)
        g_x = gens[r]
        g_x = g_x[np.isfinite(g_x).all(axis=1)]
        if len(g_x) > MAX_POINTS:
            g_x = g_x[rng.choice(len(g_x), MAX_POINTS, replace=False)]
        pg = project(g_x)
        ax.scatter(pg[:, 0], pg[:, 1], s=3, color="black", alpha=0.6, lw=0, label="generated")
        ax.set_title(f"{word} {r}", fontsize=9)
        ax.tick_params(labelsize=7)
    if first_ax is not None:
        handles, names = first_ax.get_legend_handles_labels()
        if handles:
            fig.legend(
                handles,
                names,
                loc="outside right upper",
                fontsize=7,
                markerscale=3,
                title=ctx.group_by or "group",
                title_fontsize=7,
            )
    caption = (
        f"Generated points (black) over {what or 'no real data'} coloured by "
        f"{ctx.group_by or 'group'}, at each evaluation.{proj_note}{tail}{real_note}"
    )
    return _png(fig), caption


def _group_rows(ctx: _Context, metric: str) -> pd.DataFrame:
    m = ctx.run.metrics
    return m[
        (m["scope"] == ctx.scope)
        & (m["group_by"] == ctx.group_by)
        & (m["group"] != "")
        & (m["metric"] == metric)
    ]


def fig_group_metrics(ctx: _Context) -> tuple[str, str]:
    if not ctx.group_by:
        raise _NoData("the run has no per-group metrics")
    frames = {k: _group_rows(ctx, k) for k in ("recall", "coverage")}
    if all(f.empty for f in frames.values()):
        raise _NoData("the run has no per-group recall or coverage rows")
    groups = group_order(pd.concat(frames.values())["group"].unique())
    colors = dict(zip(groups, _colors(len(groups)), strict=True))
    fig = _figure(10, 3.6)
    for i, (metric, df) in enumerate(frames.items()):
        ax = fig.add_subplot(1, 2, i + 1)
        for g in groups:
            d = df[df["group"] == g].sort_values("round")
            if len(d):
                ax.plot(d["round"], d["value"], marker="o", ms=3, color=colors[g], label=str(g))
        ax.set_ylim(-0.03, 1.03)
        _round_axis(ax, ctx.step_word)
        ax.set_title(f"{metric} per {ctx.group_by}", fontsize=10)
    fig.legend(
        *fig.axes[0].get_legend_handles_labels(),
        loc="outside right upper",
        fontsize=7,
        title=ctx.group_by,
        title_fontsize=7,
    )
    return _png(fig), (
        f"Per-group recall and coverage of the {ctx.scope} evaluation over {ctx.step_word}s "
        f"(one line per {ctx.group_by}): a line near 0 is a group the generator forgets."
    )


def _heatmap(
    ax: Axes, table: pd.DataFrame, cmap: str, vmin: float | None, vmax: float | None, fmt: str
) -> Any:
    values = table.to_numpy(dtype=float)
    # NaN = not measured (e.g. too few held-out points): drawn grey.
    colors = matplotlib.colormaps[cmap].with_extremes(bad="#dddddd")
    im = ax.imshow(np.ma.masked_invalid(values), cmap=colors, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(table.shape[1]), [str(c) for c in table.columns], fontsize=7)
    ax.set_yticks(range(table.shape[0]), [str(c) for c in table.index], fontsize=7)
    if values.size <= 400:  # numbers in cells stay readable up to ~20 × 20
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
                    fontsize=6,
                    color="white" if dark else "black",
                )
    return im


def fig_client_recall(ctx: _Context) -> tuple[str, str]:
    m = ctx.run.metrics
    table = client_group_table(m, group_by=ctx.group_by or None)
    if table.empty:
        raise _NoData(
            "no per-client, per-group recall in this run"
            + (" (a centralized run has no clients)" if ctx.scope == "centralized" else "")
        )
    col = str(table.columns.name)
    rnd = int(m.loc[(m["scope"] == "client") & (m["metric"] == "eval.recall"), "round"].max())
    fig = _figure(min(2 + 0.55 * table.shape[1], 14), min(1.5 + 0.35 * table.shape[0], 14))
    ax = fig.add_subplot(1, 1, 1)
    im = _heatmap(ax, table, "viridis", 0.0, 1.0, ".2f")
    ax.set_xlabel(col)
    ax.set_ylabel("client")
    fig.colorbar(im, ax=ax, label="recall")
    return _png(fig), (
        f"Recall of the global generator on each client's held-out data, per {col}, at "
        f"{ctx.step_word} {rnd}. Grey: not measured (too few points of that group)."
    )


def fig_partition(ctx: _Context) -> tuple[str, str]:
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
    fig = _figure(min(2 + 0.55 * table.shape[1], 14), min(1.5 + 0.35 * table.shape[0], 14))
    ax = fig.add_subplot(1, 1, 1)
    im = _heatmap(ax, table, "Blues", 0.0, None, ".0f")
    ax.set_xlabel(col)
    ax.set_ylabel("client")
    fig.colorbar(im, ax=ax, label="points")
    return _png(fig), f"Points of each {col} on each client (partition.csv)."


_TRAIN_PANELS: tuple[tuple[str, Callable[[str], bool]], ...] = (
    ("losses", lambda k: "loss" in k or k == "train.penalty"),
    ("gradient norms", lambda k: "grad_norm" in k),
    ("Lipschitz estimates", lambda k: k.startswith("train.lipschitz.")),
    ("critic outputs", lambda k: True),
)


def fig_training(ctx: _Context) -> tuple[str, str]:
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
    fig = _figure(4.2 * len(panels), 3.4)
    for i, (title, keys) in enumerate(panels.items()):
        ax = fig.add_subplot(1, len(panels), i + 1)
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
        ax.set_title(title, fontsize=10)
        _round_axis(ax, ctx.step_word)
        ax.legend(fontsize=6)
    how = "mean over the clients that trained in each round" if federated else "at each step"
    return _png(fig), f"Training statistics ({how})."


def fig_fairness(ctx: _Context) -> tuple[str, str]:
    m = ctx.run.metrics
    rows = m[
        (m["scope"] == ctx.scope)
        & (m["group_by"] == ctx.group_by)
        & m["metric"].isin(["recall.difference", "recall.ratio"])
    ]
    if not ctx.group_by or rows.empty:
        raise _NoData("the run has no recall.difference / recall.ratio rows")
    fig = _figure(6.5, 3.4)
    ax = fig.add_subplot(1, 1, 1)
    for key, style in (("recall.difference", "-o"), ("recall.ratio", "--s")):
        s = rows[rows["metric"] == key].sort_values("round")
        ax.plot(s["round"], s["value"], style, ms=3, label=key)
    ax.set_ylim(-0.03, 1.03)
    _round_axis(ax, ctx.step_word)
    ax.legend(fontsize=8)
    return _png(fig), (
        f"Fairness gap across {ctx.group_by} over {ctx.step_word}s: recall difference "
        "(max − min, 0 is fair) and ratio (min / max, 1 is fair; missing when max is 0)."
    )


_FIGURES: tuple[tuple[str, str, Callable[[_Context], tuple[str, str]]], ...] = (
    ("fig-samples", "Real vs generated samples", fig_samples),
    ("fig-group-metrics", "Per-group recall and coverage", fig_group_metrics),
    ("fig-fairness", "Fairness gap", fig_fairness),
    ("fig-client-recall", "Client × group recall", fig_client_recall),
    ("fig-partition", "Partition", fig_partition),
    ("fig-training", "Training: losses, gradient norms, Lipschitz estimates", fig_training),
)


# ---- tables ----------------------------------------------------------------------------------
def _table(header: Sequence[str] | None, rows: Sequence[Sequence[str]], id_: str) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header or ())
    thead = f"<thead><tr>{head}</tr></thead>" if header else ""
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows
    )
    return f'<table id="{id_}">{thead}<tbody>{body}</tbody></table>'


def _diagnosis(run_dir: Path) -> pd.DataFrame:
    p = run_dir / "diagnosis.csv"
    if not p.is_file() or p.stat().st_size == 0:
        return pd.DataFrame(columns=["round", "scope", "client", "label", "reason"])
    return pd.read_csv(p).fillna("")


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
    diag = diag[(diag["scope"] == ctx.scope) & (diag["round"] == rnd)] if len(diag) else diag
    if len(diag):
        d = diag.iloc[-1]
        out.append(
            f'<p class="diag" id="headline-diagnosis"><b>{html.escape(str(d["label"]))}</b>: '
            f"{html.escape(str(d['reason']))}</p>"
        )
    wide = group_table(m, ctx.scope, rnd, ctx.group_by) if ctx.group_by else pd.DataFrame()
    cols = [c for c in PER_GROUP if c in wide.columns]
    if cols:
        body = [
            [str(g)]
            + [format_value(c, float(wide.loc[g, c])) for c in cols]
            + [str(int(wide.loc[g, "n"]))]
            for g in wide.index
        ]
        out.append(_table([ctx.group_by, *cols, "n real"], body, "per-group"))
    return "\n".join(out)


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
 margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f3f3f3}
figure{margin:1em 0}figure img{max-width:100%;height:auto}
figcaption{font-size:.9em;color:#555;margin-top:.3em}
.note{color:#666;font-style:italic}.error{color:#a00}.diag{background:#fff6e0;padding:.4em .6em}
code{background:#f3f3f3;padding:0 .2em}
"""

# Marks every decoded image and writes #images-ok once the page has loaded, so a headless
# browser (the tests, CI) can prove that all embedded figures really render.
IMAGE_CHECK_JS = """
window.addEventListener("load", function () {
  var imgs = document.getElementsByTagName("img"), ok = 0;
  for (var i = 0; i < imgs.length; i++) {
    var good = imgs[i].complete && imgs[i].naturalWidth > 0;
    imgs[i].setAttribute("data-loaded", good ? "1" : "0");
    if (good) ok++;
  }
  var d = document.createElement("div");
  d.id = "images-ok"; d.hidden = true;
  d.setAttribute("data-total", String(imgs.length)); d.textContent = String(ok);
  document.body.appendChild(d);
});
"""


def render(run: Run) -> str:
    """The report of a loaded run as one HTML string."""
    m = run.metrics
    scope = main_scope(m) if len(m) else "centralized"
    ctx = _Context(
        run=run,
        scope=scope,
        step_word="step" if scope == "centralized" else "round",
        group_by=_first_group_column(m, scope) if len(m) else "",
    )
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
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>fedgan report: {html.escape(name)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>fedgan report: {html.escape(name)}</h1>",
        _table(None, facts, "facts"),
        "<h2>Last evaluation</h2>",
        headline_section(ctx),
    ]
    for fig_id, title, draw in _FIGURES:
        parts.append(f'<h2 id="{fig_id}-section">{html.escape(title)}</h2>')
        try:
            png, caption = draw(ctx)
        except _NoData as exc:
            parts.append(
                f'<p class="note" id="{fig_id}-note">Not shown: {html.escape(str(exc))}.</p>'
            )
            continue
        except Exception as exc:  # odd data in one section must not cost the whole report
            reason = html.escape(f"{type(exc).__name__}: {exc}")
            parts.append(
                f'<p class="note error" id="{fig_id}-note">Could not be drawn: {reason}</p>'
            )
            continue
        parts.append(
            f'<figure id="{fig_id}"><img alt="{html.escape(title)}" '
            f'src="data:image/png;base64,{png}">'
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


def write_report(run_dir: str | Path, out: Path | None = None) -> Path:
    """Write the run's self-contained `report.html` (default: into the run folder); its path."""
    run = load_run(run_dir)
    target = Path(out) if out is not None else run.path / "report.html"
    atomic_write_text(target, render(run))
    return target
