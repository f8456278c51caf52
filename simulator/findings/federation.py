"""Item 10: minority-mode recall under federation — against Dirichlet α, the federated networks,
the fairness-aware rules and the number of local steps between synchronizations."""

from __future__ import annotations

from pathlib import Path

from simulator.findings.batch import Job, Outcome, run_jobs
from simulator.findings.common import Finding, md_table, mean_std, nanmean, pyplot, save_figure

RULES: dict[str, tuple[str, ...]] = {
    "FedAvg, both networks": (),
    "generator-only (private critics)": ("federation.federate=generator",),
    "coverage-weighted FedAvg (q 2)": ("strategy={name: coverage_weighted, params: {q: 2.0}}",),
    "group-aware (β 2, coverage)": (
        "strategy={name: group_aware, params: {beta: 2.0, metric: coverage}}",
    ),
}
ALPHAS = (0.05, 0.3, 1.0, 100.0)
LOCAL = {5: 60, 20: 15, 60: 5}
"""Local steps → rounds: the same 300 local steps per sampled client in every setting."""
MINORITY = ("0", "1")

EXPECTATION = (
    "Minority modes 0 and 1 (2 % each) are split over the clients by the same Dirichlet(α) "
    "label skew as the rest. As α falls the minority points concentrate on few clients, whose "
    "updates are averaged away: under FedAvg of both networks minority-mode recall should fall "
    "with α (Bias-Free FedGAN: FedGAN is biased under non-IID data). Private critics "
    "(generator-only federation) and the fairness-aware rules, which up-weight clients that "
    "the global model serves worst, should hold it up better at small α. More local steps "
    "between synchronizations let clients drift apart, which should lower it further at a "
    "fixed α."
)
RULE = (
    "agrees if (a) FedAvg's minority recall (mean over modes 0, 1 and seeds) at α = 0.05 is "
    "below its value at α = 100, (b) at α = 0.05 at least one other rule beats FedAvg's "
    "minority recall by ≥ 0.05, and (c) with α = 0.3, minority recall at 60 local steps is "
    "below that at 5 local steps."
)


def _minority(o: Outcome, metric: str) -> float:
    return nanmean(o.group(metric, g) for g in MINORITY)


def run(quick: bool, fig_dir: Path, n_jobs: int = 2) -> Finding:
    seeds = [0] if quick else [0, 1]
    alphas = (0.05, 100.0) if quick else ALPHAS
    local = {5: 2, 20: 1} if quick else LOCAL
    small = ("gan.generator.widths=[16, 16]", "gan.critic.widths=[16, 16]") if quick else ()
    jobs = [
        Job(
            "federation.yaml",
            (
                *ov,
                f"partition.params={{alpha: {a}}}",
                f"seed={s}",
                *small,
                *(
                    ("federation.rounds=2", "federation.local_steps=5", "evaluation.every=2")
                    if quick
                    else ()
                ),
            ),
            ("rule", rule, a, s),
        )
        for rule, ov in RULES.items()
        for a in alphas
        for s in seeds
    ]
    jobs += [
        Job(
            "federation.yaml",
            (
                "partition.params={alpha: 0.3}",
                f"federation.local_steps={k}",
                f"federation.rounds={r}",
                f"evaluation.every={r}",
                f"seed={s}",
                *small,
            ),
            ("local", k, s),
        )
        for k, r in local.items()
        for s in seeds
    ]
    out = run_jobs(jobs, n_jobs)
    rule_out = {(o.key[1], o.key[2]): [] for o in out if o.key[0] == "rule"}  # type: ignore[var-annotated]
    for o in out:
        if o.key[0] == "rule":
            rule_out[(o.key[1], o.key[2])].append(o)
    local_out = {k: [o for o in out if o.key[0] == "local" and o.key[1] == k] for k in local}

    def cell(os_: list[Outcome], metric: str) -> str:
        return mean_std([_minority(o, metric) for o in os_], ".2f")

    rows = []
    for rule in RULES:
        rows.append(
            [rule]
            + [
                cell(rule_out[(rule, a)], "recall") + " / " + cell(rule_out[(rule, a)], "coverage")
                for a in alphas
            ]
        )
    local_rows = [
        [
            f"{k} local steps × {local[k]} rounds",
            cell(os_, "recall"),
            cell(os_, "coverage"),
            mean_std([o.get("coverage") for o in os_], ".2f"),
            mean_std([o.get("modes_captured") for o in os_], ".1f"),
        ]
        for k, os_ in local_out.items()
    ]
    rec = {
        (r, a): nanmean(_minority(o, "recall") for o in rule_out[(r, a)])
        for r in RULES
        for a in alphas
    }
    lrec = {k: nanmean(_minority(o, "recall") for o in os_) for k, os_ in local_out.items()}
    fedavg = next(iter(RULES))
    lo, hi = min(alphas), max(alphas)
    ks = sorted(local)
    a_ok = rec[(fedavg, lo)] < rec[(fedavg, hi)]
    b_ok = any(rec[(r, lo)] >= rec[(fedavg, lo)] + 0.05 for r in RULES if r != fedavg)
    c_ok = lrec[ks[-1]] < lrec[ks[0]]
    agrees = bool(a_ok and b_ok and c_ok)
    verdict = (
        f"(a) FedAvg minority recall {rec[(fedavg, lo)]:.2f} at α = {lo:g} vs "
        f"{rec[(fedavg, hi)]:.2f} at α = {hi:g}: {'yes' if a_ok else 'no'}; (b) best other rule "
        f"at α = {lo:g}: {max(rec[(r, lo)] for r in RULES if r != fedavg):.2f}: "
        f"{'yes' if b_ok else 'no'}; (c) {ks[-1]} vs {ks[0]} local steps: "
        f"{lrec[ks[-1]]:.2f} vs {lrec[ks[0]]:.2f}: {'yes' if c_ok else 'no'}."
    )
    cov = max((c for c in (_minority(o, "coverage") for o in out) if c == c), default=0.0)
    if cov < 0.05:
        verdict += (
            f" Minority-mode coverage is below 0.05 in every run (max {cov:.2f}): at "
            "this budget no federated setting learns the 2 % modes, so the recall differences "
            "are a few stray samples with large k-NN balls (±0.5 across seeds), not a mode "
            "that is kept."
        )
    table = (
        "Minority-mode recall / coverage (mean over modes 0 and 1) against Dirichlet α:\n\n"
        + md_table(["rule"] + [f"α = {a:g}" for a in alphas], rows)
        + "\n\nFedAvg at α = 0.3 against the local steps between synchronizations:\n\n"
        + md_table(
            ["schedule", "minority recall", "minority coverage", "coverage (all)", "modes (of 8)"],
            local_rows,
        )
    )
    return Finding(
        number=10,
        title="Federation: minority-mode recall against non-IID skew, rules and local steps",
        setup=(
            "`scenarios/findings/federation.yaml`: the quickstart (8-ring with modes 0 and 1 at "
            "2 %, 10,000 points, 10 clients by a Dirichlet(α) label skew, 5 sampled per round) "
            "with MLPs 3×64 and 15 rounds × 20 local steps; α ∈ {"
            + ", ".join(f"{a:g}" for a in alphas)
            + "}. Global evaluation at the last round on the held-out set (40 points per "
            "minority mode). Local steps: FedAvg at α = 0.3 with 5 × 60, 20 × 15 and 60 × 5 "
            f"(local steps × rounds: the same local work). {len(seeds)} seed(s), mean ± std "
            "(quick: 2 rounds × 5 steps, MLPs 2×16). Per-group recall can read 1 for a dropped "
            "mode when a few stray samples have large k-NN balls: read it beside coverage."
        ),
        expectation=EXPECTATION,
        rule=RULE,
        table=table,
        verdict=verdict,
        agrees=agrees,
        figure=_figure(rec, alphas, fig_dir),
        values={"recall": {f"{r}/{a:g}": v for (r, a), v in rec.items()}, "local": lrec},
    )


def _figure(rec: dict[tuple[str, float], float], alphas: tuple[float, ...], fig_dir: Path) -> str:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for rule in RULES:
        ax.plot(alphas, [rec[(rule, a)] for a in alphas], "o-", label=rule)
    ax.set_xscale("log")
    ax.set_xlabel("Dirichlet α (smaller: more skewed)")
    ax.set_ylabel("minority-mode recall")
    ax.set_ylim(-0.05, 1.05)
    ax.legend(fontsize=7)
    return save_figure(fig, fig_dir, "10-federation.png")
