"""Item 10: minority modes under federation at the regime — FedAvg against Dirichlet α, every
protocol and fairness weighting at small α, local steps at fixed local work, the matched twin.

Preregistered in docs/prereg-findings-10.md (this module's EXPECTATION and RULE, verbatim)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from fedgan.simulator.findings.batch import SCENARIOS, Job, Outcome, run_jobs
from fedgan.simulator.findings.bootstrap import Interval, bonferroni, bootstrap_mean
from fedgan.simulator.findings.common import Finding, md_table, mean_std, pyplot, save_figure
from fedgan.simulator.findings.fedmethods import (
    NONE,
    PROTOCOLS,
    WEIGHTINGS,
    Method,
    every_method,
    group_methods,
    keeps_all,
    minority_coverage,
    minority_mass_ratio,
    paired,
    score,
    skip_note,
    unavailable,
    unproduced,
)
from fedgan.simulator.metrics.forgetting import FORGOTTEN_MASS_RATIO, KEEP_COVERAGE

SCENARIO = "federation.yaml"
ALPHAS = (0.05, 0.3, 1.0, 100.0)
SMALL_ALPHA = 0.05
DRIFT_ALPHA = 0.3
LOCAL = {5: 800, 10: 400, 40: 100}
"""Local steps → rounds: 4,000 local steps per client (and generator steps) in every schedule."""
DEFAULT_LOCAL = 10
"""The local steps of every run but the local-steps schedules (10 × 400 = 4,000 steps)."""
SEEDS = (0, 1, 2)
MINORITY = ("0", "1")
MINORITY_WEIGHT = 0.05
"""The true weight of each minority mode (the scenario's `data.params.minority_weight`)."""
N_MODES = 8
FEDAVG = Method("fedavg")
TWIN = Method("centralized")
SMALL_METHODS = every_method() + group_methods()
"""At the small α: every protocol unweighted and with every weighting (FedAvg first), then with
each group-level weighting (issue 27's rows: in the tables and figures, outside the rule's
preregistered comparisons (c), which loop over `WEIGHTINGS`)."""
SERVER_HELD = ("mdgan", "uagan")
A_DROP = 0.1
"""(a): FedAvg's minority coverage at the small α at least this below its value at α = 100."""
D_DROP = 0.05
"""(d): minority coverage at the most local steps at least this below the fewest."""
EPS = 1e-9
"""Float slack on the rule's thresholds (a drop of exactly 0.1 is 0.1)."""
LEVEL = 0.95
"""Level of the intervals the tables and figures show (the rule uses Bonferroni's)."""

QUICK_SMALL = (
    "gan.generator.widths=[16, 16]",
    "gan.critic.widths=[16, 16]",
    "data.n_samples=2000",
    "evaluation.n_samples=500",
)
QUICK_LOCAL = {2: 5, 5: 2, 10: 1}
"""Quick mode: 10 local steps per client in every schedule, the middle one the default."""
QUICK_DEFAULT = 5

Cell = tuple[Method, float, int]
"""(method, Dirichlet α, local steps): one setting, run once per seed."""

EXPECTATION = (
    "At the regime — the quickstart's 8-ring with modes 0 and 1 at 5 %, 4,000 generator steps, "
    "where the centralized twin kept both minority modes in 4 of 5 seeds (item 0) — label skew "
    "should cost FedAvg the minority modes. With a Dirichlet(α) split of the mode label over 5 "
    "clients, at α = 100 every client holds every mode and FedAvg should come close to the twin; "
    "at α = 0.05 each mode lives on about one client, the clients' generators learn different "
    "modes and their average loses the modes few clients hold, the 5 % ones first (Bias-Free "
    "FedGAN: FedGAN is biased under non-IID data). So FedAvg's minority coverage and minimum "
    "mode mass ratio should fall as α falls. A generator held on the server and trained at every "
    "step against every client's critic (MD-GAN, UA-GAN) never averages generators that learned "
    "different modes: at α = 0.05 it should keep more minority coverage than FedAvg (a "
    "standalone UA-GAN sketch kept both 5 % modes held by one client of 10 at this budget). A "
    "fairness weighting that up-weights the clients the generator covers worst should raise "
    "minority coverage over the same protocol unweighted. At a fixed 4,000 local steps per "
    "client, fewer synchronizations (more local steps a round) let the clients drift apart, "
    "which should lower FedAvg's minority coverage at α = 0.3."
)
RULE = (
    "(0) the run is at the regime if the centralized twin keeps both minority modes (coverage "
    "≥ 0.3 on each) in ≥ 2 of 3 seeds; if not, the verdict is that the budget was not the regime "
    "and nothing below is judged. Agrees if (a) FedAvg's minority coverage (mean over modes 0, 1 "
    "and seeds) at α = 0.05 is at least 0.1 below its value at α = 100, and its minimum mode "
    "mass ratio is lower too; (b) at α = 0.05, MD-GAN or UA-GAN (unweighted) beats FedAvg's "
    "minority coverage with the paired-by-seed bootstrap interval of the difference above 0 at "
    "the Bonferroni level for the 2 protocol comparisons (97.5 %); (c) at α = 0.05, at least one "
    "of the 9 weighting × protocol comparisons (minority coverage of the weighted protocol minus "
    "the same protocol unweighted, paired by seed) has its bootstrap interval above 0 at the "
    "Bonferroni level for 9 comparisons (1 − 0.05/9); (d) at α = 0.3, FedAvg's minority coverage "
    "at 40 local steps × 100 rounds is at least 0.05 below its value at 5 × 800. A part whose "
    "methods were all skipped is undecided, and so is the verdict then."
)


TITLE = "Federation at the regime: minority modes against skew, protocols and weightings"


def _setup(quick: bool) -> str:
    seeds = SEEDS[:1] if quick else SEEDS
    local = QUICK_LOCAL if quick else LOCAL
    small = SMALL_ALPHA
    return (
        "`scenarios/findings/federation.yaml`: the quickstart's data (8-ring, r 2, σ 0.02, "
        "modes 0 and 1 at 5 %, 10,000 points, 20 % held out: 100 points per minority mode) "
        "split over 5 clients by a Dirichlet(α) label skew, every client every round, the "
        "quickstart's GAN (MLPs 2×128, batch 128, non-saturating + R1 λ 0.1, Adam 1e-3 → "
        "5e-5), vectorized engine, 400 rounds × 10 local steps = 4,000 generator steps: the "
        "5 % regime of item 0. FedAvg at α ∈ {"
        + ", ".join(f"{a:g}" for a in ALPHAS)
        + f"}}; at α = {small:g} every protocol (FedAvg, MD-GAN with critic swaps every 100 "
        "steps, UA-GAN with π ∝ n_k) unweighted and with every fairness weighting "
        "(coverage_weighted q 2, agnostic step 0.5, group_aware β 2 on coverage); FedAvg "
        f"at α = {DRIFT_ALPHA:g} with "
        + ", ".join(f"{k} × {r}" for k, r in local.items())
        + " (local steps × rounds: the same local work); the matched centralized twin. "
        f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''}, paired across methods (a seed "
        "fixes data, partition and initialisation); evaluation at the last round, 2,500 "
        "samples, k = 5. "
        "Preregistered in `docs/prereg-findings-10.md`"
        + (
            " (quick: 1 seed, MLPs 2×16, 2,000 points, 500 samples, 10 local steps per "
            "client — smoke values that mean nothing)"
            if quick
            else ""
        )
        + "."
    )


def pending() -> Finding:
    """Item 10 before its full run: what it measures, how to run it and what it costs, with
    no number (`fedgan findings --only 10` replaces it)."""
    n_runs = len(_plan(False)[2]) * len(SEEDS)
    return Finding(
        number=10,
        title=TITLE,
        setup=_setup(False),
        expectation=EXPECTATION,
        rule=RULE,
        table=(
            "*Not measured yet.* `fedgan findings --only 10` runs the preregistered design "
            f"(`docs/prereg-findings-10.md`): {n_runs} runs, planned at ≈ 33 min on 2 cores "
            "(≈ 78 CPU s per 4,000-step FedAvg run of 5 clients at MLPs 2×128, two runs at a "
            "time; MD-GAN and UA-GAN costed like FedAvg until they are on main), and writes three "
            "tables "
            "(FedAvg against α beside the twin; every protocol and weighting at α = 0.05 with "
            "paired-by-seed bootstrap differences; the local-steps schedules) and three figures "
            "(minority coverage against α per method with intervals; coverage per mode per "
            "method; bytes against quality per protocol). Methods whose protocol is not in the "
            "code are skipped with what `fedgan validate` says of them."
        ),
        verdict="Not measured yet: the verdict comes from the full run, by the rule above.",
        agrees=False,
        decided=False,
    )


@dataclass
class Part:
    """One part of the rule: True / False, or None when its methods were skipped."""

    name: str
    ok: bool | None
    text: str


@dataclass
class Judgement:
    regime: bool
    twin_kept: int
    twin_n: int
    parts: list[Part]

    @property
    def decided(self) -> bool:
        """As preregistered: undecided when a part is (all its methods skipped); a budget
        that is not the regime decides (it disagrees)."""
        return not self.regime or all(p.ok is not None for p in self.parts)

    @property
    def agrees(self) -> bool:
        return self.regime and all(p.ok is True for p in self.parts)


def _mean(os_: Sequence[Outcome], value: object) -> float:
    assert callable(value)
    return float(np.mean([value(o) for o in os_])) if os_ else math.nan


def _cov(o: Outcome) -> float:
    return minority_coverage(o, MINORITY)


def _min_mass(o: Outcome) -> float:
    return score(o, "min_mass_ratio")


def _any(results: list[bool | None]) -> bool | None:
    """An existential part judged on the comparisons that were measured (None: skipped), as
    preregistered: True if one passes, False if none does, None when none was measured."""
    measured = [r for r in results if r is not None]
    return any(measured) if measured else None


def judge(
    res: Mapping[Cell, Sequence[Outcome]],
    alphas: Sequence[float] = ALPHAS,
    local: Sequence[int] = tuple(LOCAL),
    default_local: int = DEFAULT_LOCAL,
) -> Judgement:
    """The preregistered rule (`RULE`) on the outcomes of each cell (seeds in one order);
    a cell that is absent was skipped."""
    small, large = min(alphas), max(alphas)
    twin = list(res.get((TWIN, small, default_local), ()))
    twin_kept = sum(keeps_all(o, MINORITY) for o in twin)
    regime = bool(twin) and twin_kept >= math.ceil(2 * len(twin) / 3)

    parts = []
    fa_small = res.get((FEDAVG, small, default_local))
    fa_large = res.get((FEDAVG, large, default_local))
    if fa_small and fa_large:
        cs, cl = _mean(fa_small, _cov), _mean(fa_large, _cov)
        ms, ml = _mean(fa_small, _min_mass), _mean(fa_large, _min_mass)
        ok = cs <= cl - A_DROP + EPS and ms < ml
        text = (
            f"FedAvg's minority coverage {cs:.2f} at α = {small:g} vs {cl:.2f} at α = {large:g}, "
            f"minimum mode mass ratio {ms:.2f} vs {ml:.2f}"
        )
        parts.append(Part("a", ok, text))
    else:
        parts.append(Part("a", None, "FedAvg's cells were skipped"))

    level_b = bonferroni(len(SERVER_HELD))
    results: list[bool | None] = []
    texts = []
    for p in SERVER_HELD:
        os_ = res.get((Method(p), small, default_local))
        if not os_ or not fa_small:
            results.append(None)
            texts.append(f"{Method(p).label} skipped")
            continue
        iv = paired(os_, fa_small, _cov, level_b)
        results.append(iv.above(0.0))
        texts.append(f"{Method(p).label} − FedAvg {iv.cell()} ({level_b:.1%})")
    parts.append(Part("b", _any(results), "; ".join(texts)))

    n_c = len(PROTOCOLS) * len(WEIGHTINGS)
    level_c = bonferroni(n_c)
    results, best = [], None
    for p in PROTOCOLS:
        base = res.get((Method(p), small, default_local))
        for w in WEIGHTINGS:
            os_ = res.get((Method(p, w), small, default_local))
            if not os_ or not base:
                results.append(None)
                continue
            iv = paired(os_, base, _cov, level_c)
            results.append(iv.above(0.0))
            if best is None or iv.low > best[1].low:
                best = (Method(p, w), iv)
    measured = sum(r is not None for r in results)
    text = f"{measured} of {n_c} comparisons measured"
    if best is not None:
        text += (
            f"; highest lower end: {best[0].label} − {best[0].unweighted.label} "
            f"{best[1].cell()} ({level_c:.2%})"
        )
    parts.append(Part("c", _any(results), text))

    lo, hi = min(local), max(local)
    few = res.get((FEDAVG, DRIFT_ALPHA, lo))
    many = res.get((FEDAVG, DRIFT_ALPHA, hi))
    if few and many:
        cf, cm = _mean(few, _cov), _mean(many, _cov)
        parts.append(
            Part(
                "d",
                cm <= cf - D_DROP + EPS,
                f"FedAvg at α = {DRIFT_ALPHA:g}: minority coverage {cm:.2f} at {hi} local steps "
                f"vs {cf:.2f} at {lo}",
            )
        )
    else:
        parts.append(Part("d", None, "the local-steps schedules were skipped"))
    return Judgement(regime, twin_kept, len(twin), parts)


def _verdict(
    j: Judgement, res: Mapping[Cell, Sequence[Outcome]], small: float, default: int
) -> str:
    if not j.regime:
        return (
            f"Not at the regime: the centralized twin kept both minority modes in {j.twin_kept} "
            f"of {j.twin_n} seeds (the rule needs ≥ 2 of 3), so this budget compares nothing "
            "and no part is judged."
        )
    word = {True: "yes", False: "no", None: "undecided"}
    out = (
        f"At the regime (the twin kept both minority modes in {j.twin_kept} of {j.twin_n} "
        "seeds). " + " ".join(f"({p.name}) {p.text}: {word[p.ok]}." for p in j.parts)
    )
    lost = []
    for m in SMALL_METHODS:
        os_ = res.get((m, small, default))
        if os_ is None:
            continue
        if _mean(os_, _cov) < KEEP_COVERAGE:
            # The project's one rule (the evaluation's `forgotten` rows), never a second one.
            n_lost = sum(any(o.group("forgotten", g) >= 0.5 for g in MINORITY) for o in os_)
            how = (
                f"forgotten in {n_lost} of {len(os_)} runs"
                if n_lost
                else "generated but not covered"
            )
            lost.append(f"{m.label} ({how})")
    if lost:
        out += (
            f" Where the minority modes are lost at α = {small:g}, the forgotten rule (mass "
            f"inside their k-NN balls < {FORGOTTEN_MASS_RATIO:g} × their share) says how: "
            + ", ".join(lost)
            + "."
        )
    return out


def _plan(quick: bool) -> tuple[dict[int, int], int, list[Cell]]:
    local = QUICK_LOCAL if quick else LOCAL
    default = QUICK_DEFAULT if quick else DEFAULT_LOCAL
    cells: list[Cell] = [(m, SMALL_ALPHA, default) for m in SMALL_METHODS if m.protocol != "fedavg"]
    cells += [(FEDAVG, DRIFT_ALPHA, k) for k in local if k != default]
    cells += [(FEDAVG, a, default) for a in ALPHAS]
    cells += [
        (m, SMALL_ALPHA, default) for m in SMALL_METHODS if m.protocol == "fedavg" and m != FEDAVG
    ]
    cells.append((TWIN, SMALL_ALPHA, default))
    return local, default, cells  # longest first (server-held, many rounds): the pool ends evenly


def _overrides(cell: Cell, rounds: int, seed: int, quick: bool) -> tuple[str, ...]:
    m, alpha, k = cell
    return (
        *m.overrides,
        f"partition.params={{alpha: {alpha}}}",
        f"federation.local_steps={k}",
        f"federation.rounds={rounds}",
        f"evaluation.every={rounds}",
        f"seed={seed}",
        *(QUICK_SMALL if quick else ()),
    )


def run(quick: bool, fig_dir: Path, n_jobs: int = 2) -> Finding:
    seeds = SEEDS[:1] if quick else SEEDS
    local, default, cells = _plan(quick)
    skipped: dict[Cell, str] = {}
    jobs = []
    for cell in cells:
        rounds = local[cell[2]]
        why = unavailable(
            SCENARIOS / SCENARIO, _overrides(cell, rounds, seeds[0], quick), cell[0].centralized
        )
        if why:
            skipped[cell] = why
            continue
        for s in seeds:
            jobs.append(
                Job(
                    SCENARIO,
                    _overrides(cell, rounds, s, quick),
                    (cell[0].label, cell[1], cell[2], s),
                    centralized=cell[0].centralized,
                )
            )
    out = run_jobs(jobs, n_jobs)
    by_key = {(c[0].label, c[1], c[2]): c for c in cells}
    res: dict[Cell, list[Outcome]] = {}
    for o in out:
        label, a, k, _ = o.key
        assert isinstance(label, str) and isinstance(a, float) and isinstance(k, int)
        res.setdefault(by_key[(label, a, k)], []).append(o)

    j = judge(res, ALPHAS, tuple(local), default)
    small = SMALL_ALPHA
    tables = _tables(res, skipped, local, default)
    figs = (
        _figure_alpha(res, default, fig_dir),
        _figure_modes(res, default, fig_dir),
        _figure_bytes(res, default, fig_dir),
    )
    notes = (
        "Tables show 95 % paired-by-seed bootstrap intervals (10,000 resamples of the seeds); "
        "the rule judges (b) and (c) at Bonferroni's levels (97.5 % and 1 − 0.05/9). A run that "
        "diverged counts as keeping nothing (coverage and mass 0)."
    )
    if skipped:
        notes += " Skipped, with what `fedgan validate` says of them: " + skip_note(skipped) + "."
    return Finding(
        number=10,
        title=TITLE,
        setup=_setup(quick),
        expectation=EXPECTATION,
        rule=RULE,
        table=tables,
        verdict=_verdict(j, res, small, default),
        agrees=j.agrees,
        decided=j.decided,
        figure=figs[0],
        more_figures=figs[1:],
        notes=notes,
        values={
            "regime": j.regime,
            "twin_kept": j.twin_kept,
            "parts": {p.name: p.ok for p in j.parts},
            "skipped": {f"{c[0].label}/{c[1]:g}/{c[2]}": why for c, why in skipped.items()},
            "coverage": {
                f"{c[0].label}/{c[1]:g}/{c[2]}": _mean(os_, _cov) for c, os_ in res.items()
            },
            "cpu_seconds": {
                f"{c[0].label}/{c[1]:g}/{c[2]}": _mean(os_, lambda o: o.cpu_seconds)
                for c, os_ in res.items()
            },
        },
    )


def _row_cells(os_: Sequence[Outcome]) -> list[str]:
    n = len(os_)
    bad = unproduced(os_, MINORITY)
    cov = mean_std([_cov(o) for o in os_], ".2f") + (f" ({bad} diverged)" if bad else "")
    mb = [o.bytes / 1e6 for o in os_]
    return [
        cov,
        " · ".join(
            f"{o.group('coverage', MINORITY[0]):.2f}/{o.group('coverage', MINORITY[1]):.2f}"
            for o in os_
        ),
        f"{sum(keeps_all(o, MINORITY) for o in os_)} of {n}",
        mean_std([_min_mass(o) for o in os_], ".2f"),
        mean_std([minority_mass_ratio(o, MINORITY, MINORITY_WEIGHT) for o in os_], ".2f"),
        mean_std([score(o, "precision") for o in os_], ".2f"),
        mean_std([score(o, "modes_captured") for o in os_], ".1f"),
        mean_std(mb, ".1f") if all(math.isfinite(x) for x in mb) else "n/a",
        mean_std([o.cpu_seconds for o in os_], ".0f"),
    ]


HEADER = [
    "minority coverage",
    "mode 0 / mode 1, per seed",
    "seeds keeping both",
    "min mode mass ratio",
    "minority mass ratio",
    "precision",
    "modes (of 8)",
    "MB (down + up)",
    "CPU s/run",
]


def _tables(
    res: Mapping[Cell, Sequence[Outcome]],
    skipped: Mapping[Cell, str],
    local: Mapping[int, int],
    default: int,
) -> str:
    def row(label: str, cell: Cell, extra: Sequence[str] = ()) -> list[str]:
        os_ = res.get(cell)
        if os_ is None:
            why = "skipped (see the note)" if cell in skipped else "not run"
            return [label, *extra, why] + [""] * (len(HEADER) - 1)
        return [label, *extra, *_row_cells(os_)]

    alpha_rows = [row(f"α = {a:g}", (FEDAVG, a, default)) for a in ALPHAS]
    alpha_rows.append(row("centralized twin", (TWIN, SMALL_ALPHA, default)))
    fa = res.get((FEDAVG, SMALL_ALPHA, default))
    small_rows = []
    for m in SMALL_METHODS:
        cell = (m, SMALL_ALPHA, default)
        os_ = res.get(cell)
        vs_fa = vs_base = ""
        if os_ and fa and m != FEDAVG:
            vs_fa = paired(os_, fa, _cov, LEVEL).cell()
        base = res.get((m.unweighted, SMALL_ALPHA, default))
        if os_ and base and m.rule != NONE:
            vs_base = paired(os_, base, _cov, LEVEL).cell()
        small_rows.append(row(m.label, cell, (vs_fa, vs_base)))
    lo = min(local)
    few = res.get((FEDAVG, DRIFT_ALPHA, lo))
    local_rows = []
    for k, r in local.items():
        os_ = res.get((FEDAVG, DRIFT_ALPHA, k))
        d = paired(os_, few, _cov, LEVEL).cell() if os_ and few and k != lo else ""
        local_rows.append(row(f"{k} local steps × {r} rounds", (FEDAVG, DRIFT_ALPHA, k), (d,)))
    return (
        "FedAvg against the Dirichlet α (and the centralized twin):\n\n"
        + md_table(["setting", *HEADER], alpha_rows)
        + f"\n\nEvery protocol and weighting at α = {SMALL_ALPHA:g} (Δ: paired-by-seed difference "
        "in minority coverage, mean [95 % bootstrap interval]):\n\n"
        + md_table(["method", "Δ vs FedAvg", "Δ vs unweighted", *HEADER], small_rows)
        + f"\n\nFedAvg at α = {DRIFT_ALPHA:g}, the same local work in every schedule:\n\n"
        + md_table(["schedule", f"Δ vs {lo} local steps", *HEADER], local_rows)
    )


# --- figures -----------------------------------------------------------------------------------

COLORS = {"fedavg": "tab:blue", "mdgan": "tab:orange", "uagan": "tab:green", "centralized": "k"}
MARKERS = {
    NONE: "o",
    "coverage_weighted": "s",
    "agnostic": "^",
    "group_aware": "D",
    "group_dro": "*",
}


def _interval(os_: Sequence[Outcome]) -> Interval:
    return bootstrap_mean([_cov(o) for o in os_], LEVEL)


def _figure_alpha(res: Mapping[Cell, Sequence[Outcome]], default: int, fig_dir: Path) -> str:
    plt = pyplot()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [1, 1.3]})
    twin = res.get((TWIN, SMALL_ALPHA, default))
    for axis in (ax, bx):
        if twin:
            iv = _interval(twin)
            axis.axhspan(iv.low, iv.high, color="0.85", label="centralized twin (95 %)")
            axis.axhline(iv.mean, color="0.5", lw=0.8)
        axis.axhline(KEEP_COVERAGE, color="k", lw=0.8, ls="--", label="kept (0.3)")
        axis.set_ylim(-0.03, 1.0)
    pts = [(a, res.get((FEDAVG, a, default))) for a in ALPHAS]
    xs = [a for a, os_ in pts if os_]
    ivs = [_interval(os_) for _, os_ in pts if os_]
    if xs:
        y = np.array([i.mean for i in ivs])
        err = np.array([[i.mean - i.low for i in ivs], [i.high - i.mean for i in ivs]])
        ax.errorbar(xs, y, yerr=err, fmt="o-", color=COLORS["fedavg"], capsize=3, label="FedAvg")
    ax.set_xscale("log")
    ax.set_xlabel("Dirichlet α (smaller: more skewed)")
    ax.set_ylabel("minority coverage (modes 0, 1)")
    ax.set_title("FedAvg against skew (mean, 95 % bootstrap over seeds)", fontsize=9)
    ax.legend(fontsize=7)
    labels = []
    for i, m in enumerate(SMALL_METHODS):
        labels.append(m.label)
        os_ = res.get((m, SMALL_ALPHA, default))
        if not os_:
            bx.text(i, 0.02, "skipped", rotation=90, fontsize=7, ha="center", color="0.4")
            continue
        iv = _interval(os_)
        bx.errorbar(
            [i],
            [iv.mean],
            yerr=[[iv.mean - iv.low], [iv.high - iv.mean]],
            fmt=MARKERS[m.rule],
            color=COLORS[m.protocol],
            capsize=3,
        )
    bx.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=7)
    bx.set_title(f"every protocol and weighting at α = {SMALL_ALPHA:g}", fontsize=9)
    return save_figure(fig, fig_dir, "10-coverage-alpha.png")


def _figure_modes(res: Mapping[Cell, Sequence[Outcome]], default: int, fig_dir: Path) -> str:
    plt = pyplot()
    methods = [TWIN, *SMALL_METHODS]
    grid = np.full((len(methods), N_MODES), np.nan)
    for i, m in enumerate(methods):
        os_ = res.get((m, SMALL_ALPHA, default))
        if os_:
            grid[i] = [
                np.mean([minority_coverage(o, (str(g),)) for o in os_]) for g in range(N_MODES)
            ]
    fig, ax = plt.subplots(figsize=(6.5, 0.32 * len(methods) + 1.4))
    cmap = plt.get_cmap("viridis").with_extremes(under="0.9")  # skipped rows: grey
    im = ax.imshow(np.nan_to_num(grid, nan=-1.0), vmin=0.0, vmax=1.0, cmap=cmap, aspect="auto")
    for i in range(len(methods)):
        for g in range(N_MODES):
            v = grid[i, g]
            text = "skip" if not np.isfinite(v) else f"{v:.2f}"
            bad = np.isfinite(v) and v < KEEP_COVERAGE
            ax.text(
                g,
                i,
                text,
                ha="center",
                va="center",
                fontsize=6,
                color="red" if bad else ("k" if not np.isfinite(v) or v > 0.6 else "w"),
            )
    ax.set_xticks(
        range(N_MODES),
        [f"{g}{' (5 %)' if str(g) in MINORITY else ''}" for g in range(N_MODES)],
        fontsize=7,
    )
    ax.set_yticks(range(len(methods)), [m.label for m in methods], fontsize=7)
    ax.set_xlabel("mode")
    ax.set_title(
        f"coverage per mode at α = {SMALL_ALPHA:g} (mean over seeds; red: below 0.3, not kept)",
        fontsize=8,
    )
    fig.colorbar(im, ax=ax, fraction=0.03)
    return save_figure(fig, fig_dir, "10-coverage-modes.png")


def _figure_bytes(res: Mapping[Cell, Sequence[Outcome]], default: int, fig_dir: Path) -> str:
    plt = pyplot()
    from matplotlib import ticker

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    drawn = False
    for m in SMALL_METHODS:
        os_ = res.get((m, SMALL_ALPHA, default))
        if not os_:
            continue
        b = np.array([o.bytes for o in os_]) / 1e6
        if not np.isfinite(b).any():
            continue
        drawn = True
        for ax, value in zip(axes, (_cov, lambda o: score(o, "precision")), strict=True):
            ax.scatter(
                b,
                [value(o) for o in os_],
                marker=MARKERS[m.rule],
                color=COLORS[m.protocol],
                s=18,
                label=m.label,
            )
    for ax, what in zip(axes, ("minority coverage", "precision"), strict=True):
        ax.set_xlabel("MB down + up over the run (log)")
        ax.set_ylabel(what)
        ax.set_ylim(-0.03, 1.03)
        if drawn:
            ax.set_xscale("log")
            # Plain MB at 1-2-5 ticks: the default minor labels of a short log axis overlap.
            ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
            ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        else:
            ax.text(
                0.5,
                0.5,
                "no fed.bytes_* rows in these runs\n(the protocols write them)",
                ha="center",
                va="center",
                transform=ax.transAxes,
                fontsize=8,
            )
    if drawn:
        axes[1].legend(fontsize=6, ncol=2)
    fig.suptitle(
        f"bytes against quality per protocol at α = {SMALL_ALPHA:g}, a point per seed", fontsize=9
    )
    return save_figure(fig, fig_dir, "10-bytes.png")
