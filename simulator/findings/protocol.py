"""Item 9: the VEEGAN/PacGAN protocol table — objective × Lipschitz pairs on the 8-ring and
the 25-grid, centralized, several seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fedgan.simulator.findings.batch import Job, Outcome, run_jobs
from fedgan.simulator.findings.common import (
    Finding,
    md_table,
    mean_std,
    nanmean,
    pyplot,
    save_figure,
)

NONE = "gan.lipschitz={name: none}"
SN_ADAM = ("gan.g_opt={lr: 2.0e-4, betas: [0.0, 0.9]}", "gan.d_opt={lr: 2.0e-4, betas: [0.0, 0.9]}")
METHODS: dict[str, tuple[str, ...]] = {
    # The same pairs and per-paper settings as benchmarks/methods.py.
    "saturating": ("gan.objective=saturating", NONE),
    "non-saturating": (NONE,),
    "non-saturating + SN": ("gan.lipschitz={name: spectral_norm}", *SN_ADAM),
    "WGAN-clip (c 0.01, RMSprop 5e-5, n_critic 5)": (
        "gan.objective=wasserstein",
        "gan.lipschitz={name: weight_clip, params: {c: 0.01}}",
        "gan.n_critic=5",
        "gan.g_opt={name: rmsprop, lr: 5.0e-5}",
        "gan.d_opt={name: rmsprop, lr: 5.0e-5}",
    ),
    "WGAN-GP (λ 0.1, n_critic 5)": (
        "gan.objective=wasserstein",
        "gan.lipschitz={name: gradient_penalty, params: {lam: 0.1}}",
        "gan.n_critic=5",
        "gan.g_opt={lr: 1.0e-4, betas: [0.5, 0.9]}",
        "gan.d_opt={lr: 1.0e-4, betas: [0.5, 0.9]}",
    ),
    "hinge + SN (n_critic 5)": (
        "gan.objective=hinge",
        "gan.lipschitz={name: spectral_norm}",
        "gan.n_critic=5",
        *SN_ADAM,
    ),
    "least squares": ("gan.objective=least_squares", NONE),
    "f-GAN reverse KL": ("gan.objective=reverse_kl", NONE),
}
UNREGULARIZED = ("saturating", "non-saturating", "least squares", "f-GAN reverse KL")
CONTROLLED = ("non-saturating + SN", "WGAN-GP (λ 0.1, n_critic 5)", "hinge + SN (n_critic 5)")
DATASETS = {"8-ring": ("protocol-ring.yaml", 8), "25-grid": ("protocol-grid.yaml", 25)}
COLUMNS = ("modes_captured", "high_quality_rate", "reverse_kl", "min_mass_ratio")

EXPECTATION = (
    "From the published tables (VEEGAN Table 1; PacGAN Table 1, 3σ protocol, 2,500 samples): "
    "a plain GAN captures 1 (VEEGAN) to 6.3 (PacGAN) of the 8 ring modes at ≥ 98 % high "
    "quality, and 3.3 to 17.3 of the 25 grid modes; mode-seeking objectives (reverse KL) and "
    "unregularized GANs drop or starve modes, Lipschitz-controlled critics (SN, GP) keep more "
    "of them; the grid is harder than the ring for every method. Published numbers disagree "
    "widely between papers (architectures and budgets differ), so we expect the ordering, not "
    "the values."
)
RULE = (
    "agrees if (a) on each dataset the best controlled pair (NS + SN, WGAN-GP, hinge + SN) "
    "captures at least as large a share of the modes as the mean of the unregularized pairs "
    "(saturating, non-saturating, least squares, reverse KL), and its minimum mode mass ratio "
    "is at least as large; and (b) no method captures a larger share of the grid's modes than "
    "of the ring's (+0.05 tolerance)."
)


def run(quick: bool, fig_dir: Path, n_jobs: int = 2) -> Finding:
    seeds = [0] if quick else [0, 1, 2, 3, 4]  # the protocol's 5
    extra = ("train.steps=100", "evaluation.every=100") if quick else ()
    jobs = [
        Job(file, (*ov, f"seed={s}", *extra), (method, ds, s))
        for ds, (file, _) in DATASETS.items()
        for method, ov in METHODS.items()
        for s in seeds
    ]
    out = run_jobs(jobs, n_jobs)

    def of(method: str, ds: str) -> list[Outcome]:
        return [o for o in out if o.key[0] == method and o.key[1] == ds]

    header = ["method"]
    for ds in DATASETS:
        header += [f"{ds}: modes", "% HQ", "reverse KL", "min mass ratio"]
    rows = []
    for method in METHODS:
        row = [method]
        for ds in DATASETS:
            os_ = of(method, ds)
            row += [
                mean_std([o.get("modes_captured") for o in os_], ".1f"),
                mean_std([o.get("high_quality_rate") for o in os_], ".1f", 100.0),
                mean_std([o.get("reverse_kl") for o in os_], ".2f"),
                mean_std([o.get("min_mass_ratio") for o in os_], ".2f"),
            ]
        rows.append(row)
    share = {
        (m, ds): nanmean(o.get("modes_captured") / k for o in of(m, ds))
        for m in METHODS
        for ds, (_, k) in DATASETS.items()
    }
    ratio = {
        (m, ds): nanmean(o.get("min_mass_ratio") for o in of(m, ds))
        for m in METHODS
        for ds in DATASETS
    }
    checks = []
    for ds in DATASETS:
        best = max(CONTROLLED, key=lambda m: share[(m, ds)])  # noqa: B023 (used at once)
        plain = nanmean(share[(m, ds)] for m in UNREGULARIZED)
        plain_ratio = nanmean(ratio[(m, ds)] for m in UNREGULARIZED)
        checks.append(share[(best, ds)] >= plain and ratio[(best, ds)] >= plain_ratio)
    harder = [m for m in METHODS if share[(m, "25-grid")] <= share[(m, "8-ring")] + 0.05]
    agrees = bool(all(checks) and len(harder) == len(METHODS))
    verdict = (
        f"(a) controlled ≥ unregularized: ring {'yes' if checks[0] else 'no'}, grid "
        f"{'yes' if checks[1] else 'no'}; (b) grid no easier than ring for "
        f"{len(harder)} of {len(METHODS)} methods. Mean share of modes captured, unregularized "
        f"vs controlled: ring {nanmean(share[(m, '8-ring')] for m in UNREGULARIZED):.2f} vs "
        f"{nanmean(share[(m, '8-ring')] for m in CONTROLLED):.2f}, grid "
        f"{nanmean(share[(m, '25-grid')] for m in UNREGULARIZED):.2f} vs "
        f"{nanmean(share[(m, '25-grid')] for m in CONTROLLED):.2f}."
    )
    for ds in DATASETS:
        best_hq = max(nanmean(o.get("high_quality_rate") for o in of(m, ds)) for m in METHODS)
        if best_hq < 0.5:
            verdict += (
                f" On the {ds} no pair reaches 50 % high quality (best {best_hq:.0%}; the papers "
                "report ~95 % at their budgets): these runs are far from converged, so the "
                f"{ds} columns measure how fast each pair finds the modes more than how many it "
                "keeps. The controlled pairs also run with their papers' smaller learning rates "
                "(1e-4 to 2e-4, against 1e-3)."
            )
    published = md_table(
        ["published model", "8-ring: modes / % HQ", "25-grid: modes / % HQ", "source"],
        [
            ["GAN", "1 / 99.3", "3.3 / 0.5", "VEEGAN Table 1"],
            ["VEEGAN", "8 / 52.9", "24.6 / 40", "VEEGAN Table 1"],
            ["GAN", "6.3 / 98.2", "17.3 / 94.8", "PacGAN Table 1"],
            ["PacGAN4", "7.8 / 95.9", "24.8 / 93.6", "PacGAN Table 1"],
        ],
    )
    return Finding(
        number=9,
        title="The protocol table: objective × Lipschitz pairs on the 8-ring and the 25-grid",
        setup=(
            "`scenarios/findings/protocol-ring.yaml` (8-ring, r = 2, σ = 0.02) and "
            "`protocol-grid.yaml` (25-grid, spacing 2, σ = 0.05): centralized, MLPs 3×64, batch "
            "128, 2,000 generator steps (100 quick), each pair with its paper's optimizer "
            "settings where they differ; the 3σ protocol on 2,500 samples (modes captured, % "
            "high quality, reverse KL of the mode histogram, minimum mode mass ratio). "
            f"{len(seeds)} seed(s), mean ± std"
            + (" — fewer than the protocol's 5" if len(seeds) < 5 else "")
            + "; a shorter budget than the papers', to fit the run on 2 shared cores."
        ),
        expectation=EXPECTATION,
        rule=RULE,
        table=md_table(header, rows) + "\n\nPublished, for reference:\n\n" + published,
        verdict=verdict,
        agrees=agrees,
        figure=_figure(share, fig_dir),
        notes=(
            "The verdict depends on the budget. A first full run at 1,200 generator steps "
            "(seeds 0–2) failed part (a) on the ring — unregularized pairs captured 0.85 of the "
            "modes on average, the best controlled pair (hinge + SN) 0.79 — and was replaced by "
            "2,000-step runs (3 seeds, then these 5); read part (a) as fragile, not settled."
        ),
        values={"share": {f"{m}/{d}": v for (m, d), v in share.items()}},
    )


def _figure(share: dict[tuple[str, str], float], fig_dir: Path) -> str:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.4))
    x = np.arange(len(METHODS))
    for i, ds in enumerate(DATASETS):
        ax.bar(x + 0.4 * (i - 0.5), [share[(m, ds)] for m in METHODS], 0.4, label=ds)
    ax.set_xticks(x, [m.split(" (")[0] for m in METHODS], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("share of modes captured")
    ax.legend(fontsize=8)
    return save_figure(fig, fig_dir, "09-protocol-table.png")
