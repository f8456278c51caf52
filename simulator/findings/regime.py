"""Item 0: the regime — the generator-step budget at which the centralized twin keeps the
2 % minority modes. Every comparison of federated methods is reported at (or above) it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fedgan.simulator.findings.batch import Job, Outcome, run_jobs
from fedgan.simulator.findings.common import Finding, md_table, mean_std, pyplot, save_figure
from fedgan.simulator.metrics.diagnosis import KEEP_COVERAGE, kept

MINORITY = ("0", "1")
BUDGETS: dict[float, tuple[int, ...]] = {0.02: (2000, 4000, 8000, 16000), 0.05: (2000, 4000)}
"""Minority weight → generator-step budgets tried (5 % only at the small ones: the fallback if
2 % were out of reach on 2 cores)."""
SEEDS = (0, 1, 2, 3, 4)
SHARE = 4
"""Seeds of the five that must keep both minority modes."""

EXPECTATION = (
    "A 2 % mode holds 2 % of the training batches, so the generator sees it ~2.6 times per "
    "batch of 128: it is learned last and lost first. At 2,000 generator steps the twin "
    "loses it (coverage ≈ 0.10, measured on the landed code); with a budget several times "
    "larger — at most 16,000 steps, about 4 minutes per seed on one core — the default recipe "
    "should keep both 2 % modes (coverage ≥ 0.3 on each) in at least 4 of 5 seeds. A 5 % mode "
    "should be kept at a smaller budget."
)
RULE = (
    f"the regime budget of a minority weight is the smallest budget at which ≥ {SHARE} of "
    f"{len(SEEDS)} seeds keep both minority modes (coverage ≥ {KEEP_COVERAGE:g} on mode 0 and on "
    "mode 1 of the held-out set, 100 points each at 2 %). Agrees if the 2 % modes have a regime "
    "budget among those tried."
)


def keeps_both(o: Outcome) -> bool:
    """Whether a run kept both minority modes (coverage ≥ 0.3 on each)."""
    return all(kept(o.group("coverage", g)) for g in MINORITY)


def regime_budgets(by: dict[tuple[float, int], list[Outcome]]) -> dict[float, int | None]:
    """Minority weight → the smallest budget at which ≥ `SHARE` seeds (all, with fewer seeds)
    keep both minority modes; None where no budget does."""
    out: dict[float, int | None] = {}
    for w, b in sorted(by):
        os_ = by[(w, b)]
        if out.get(w) is None:
            ok = sum(keeps_both(o) for o in os_) >= min(SHARE, len(os_))
            out[w] = b if ok else None
    return out


def run(quick: bool, fig_dir: Path, n_jobs: int = 2) -> Finding:
    seeds = SEEDS[:2] if quick else SEEDS
    budgets = {0.02: (200, 400)} if quick else BUDGETS
    small = (
        ("gan.generator.widths=[16, 16]", "gan.critic.widths=[16, 16]", "data.n_samples=5000")
        if quick
        else ()
    )
    jobs = [
        Job(
            "regime.yaml",
            (
                f"train.steps={b}",
                f"evaluation.every={b}",
                f"data.params.minority_weight={w}",
                f"seed={s}",
                *small,
            ),
            (w, b, s),
        )
        for w, bs in budgets.items()
        for b in bs
        for s in seeds
    ]
    out = run_jobs(jobs, n_jobs)
    by: dict[tuple[float, int], list[Outcome]] = {}
    for job, o in zip(jobs, out, strict=True):
        w, b = job.key[0], job.key[1]
        assert isinstance(w, float) and isinstance(b, int)
        by.setdefault((w, b), []).append(o)
    rows = []
    regime = regime_budgets(by)
    for (w, b), os_ in by.items():
        n_keep = sum(keeps_both(o) for o in os_)
        rows.append(
            [
                f"{w:.0%}",
                f"{b:,}",
                " · ".join(
                    f"{o.group('coverage', '0'):.2f}/{o.group('coverage', '1'):.2f}" for o in os_
                ),
                f"{n_keep} of {len(os_)}",
                mean_std([o.get("precision") for o in os_], ".2f"),
                mean_std([o.get("modes_captured") for o in os_], ".1f"),
                mean_std([o.get("high_quality_rate") for o in os_], ".1f", 100.0),
                mean_std([o.get("min_mass_ratio") for o in os_], ".2f"),
                mean_std([o.seconds for o in os_], ".0f"),
            ]
        )
    found = regime.get(0.02)
    agrees = found is not None
    parts = [
        f"{w:.0%}: {f'{b:,} generator steps' if b else 'not reached'}" for w, b in regime.items()
    ]
    verdict = "Regime budget — " + "; ".join(parts) + "."
    if found is None:
        verdict += (
            " The 2 % modes are not kept in enough seeds at any budget tried: compare "
            "federated methods on 5 % minority modes instead."
        )
    else:
        verdict += (
            f" Federated comparisons on 2 % modes are reported at ≥ {found:,} generator steps "
            "(rounds × local steps) against this twin; below it every method reads ≈ 0 on "
            "the minority modes and the comparison says nothing."
        )
    table = md_table(
        [
            "minority weight",
            "generator steps",
            "coverage of mode 0 / mode 1, per seed",
            "seeds keeping both",
            "precision",
            "modes (of 8)",
            "% high quality",
            "min mass ratio",
            "s/run",
        ],
        rows,
    )
    return Finding(
        number=0,
        title="The regime: the budget at which the centralized twin keeps 2 % modes",
        setup=(
            "`scenarios/findings/regime.yaml`: the centralized default recipe (MLPs 3×128, batch "
            "128, non-saturating loss + R1 λ 0.1, Adam 1e-3 decaying linearly to 5e-5 over the "
            "run) on the 8-ring (r 2, σ 0.02) with modes 0 and 1 at 2 %, 25,000 points, 20 % "
            "held out (100 points per 2 % mode), 2,500 samples, k = 5; budgets "
            + ", ".join(f"{b:,}" for b in budgets[min(budgets)])
            + " generator steps"
            + (
                f" (5 % minority modes at {', '.join(f'{b:,}' for b in budgets[0.05])})"
                if 0.05 in budgets
                else ""
            )
            + "; "
            f"{len(seeds)} seeds; one torch thread per run, two runs at a time"
            + (" (quick: MLPs 2×16, 200/400 steps, 5,000 points)" if quick else "")
            + "."
        ),
        expectation=EXPECTATION,
        rule=RULE,
        table=table,
        verdict=verdict,
        agrees=agrees,
        figure=_figure(by, fig_dir),
        values={"regime": {f"{w:g}": b for w, b in regime.items()}},
    )


def _figure(by: dict[tuple[float, int], list[Outcome]], fig_dir: Path) -> str:
    plt = pyplot()
    weights = sorted({w for w, _ in by})
    fig, axes = plt.subplots(1, len(weights), figsize=(4.2 * len(weights), 3.2), squeeze=False)
    for ax, w in zip(axes[0], weights, strict=True):
        budgets = sorted(b for ww, b in by if ww == w)
        for g, marker in zip(MINORITY, ("o", "s"), strict=True):
            for i, b in enumerate(budgets):
                cov = [o.group("coverage", g) for o in by[(w, b)]]
                jitter = np.linspace(-0.08, 0.08, len(cov)) + (0.04 if g == "1" else -0.04)
                ax.scatter(
                    np.full(len(cov), i) + jitter,
                    cov,
                    marker=marker,
                    s=14,
                    color="tab:blue" if g == "0" else "tab:orange",
                    label=f"mode {g}" if i == 0 else None,
                )
        ax.axhline(KEEP_COVERAGE, color="k", lw=0.8, ls="--", label="kept (0.3)")
        ax.set_xticks(range(len(budgets)), [f"{b // 1000}k" for b in budgets])
        ax.set_xlabel("generator steps")
        ax.set_ylabel("coverage of the minority mode")
        ax.set_ylim(-0.03, 1.0)
        ax.set_title(f"minority weight {w:.0%}, one point per seed", fontsize=9)
        ax.legend(fontsize=7)
    return save_figure(fig, fig_dir, "00-regime.png")
