"""Item 11: who privacy forgets — minority coverage, worst-group coverage and precision against ε,
at sample level (the quickstart) and at user level (the cross-device shape), each method beside
its twin.

Preregistered in docs/prereg-findings-11.md (this module's EXPECTATION and RULE, verbatim)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from fedgan.simulator.findings.batch import Job, Outcome, run_jobs
from fedgan.simulator.findings.bootstrap import bonferroni
from fedgan.simulator.findings.common import (
    QUICK_RUN,
    Finding,
    md_table,
    mean_std,
    pyplot,
    save_figure,
)
from fedgan.simulator.findings.fedmethods import (
    keeps_all,
    minority_coverage,
    paired,
    score,
    skip_note,
    unavailable,
)

EPSILONS = (1.0, 3.0, 10.0, math.inf)
"""The budgets; ∞ is the run without the `privacy:` section."""
SEEDS = (0, 1, 2)
MINORITY = ("0", "1")
MAJORITY = ("2", "3", "4", "5", "6", "7")
JUDGED_EPSILON = 3.0
"""The budget parts (a) and (b) judge at."""
TARGET_EPSILON = 10.0
"""The moonshot: keep both minority modes at ε ≤ this in ≥ 2 of 3 seeds."""
FALLS_FIRST = 0.1
"""(a): the minority's relative loss must exceed the majority's by at least this."""
KEPT_AT_INFINITY = 0.3
"""(a) judges a method only where it keeps the minority at ε = ∞ (mean coverage ≥ this)."""
EPS = 1e-9


@dataclass(frozen=True)
class Method:
    """A method of a part: `protocol` (fedavg, mdgan, uagan) or the centralized twin."""

    protocol: str

    @property
    def label(self) -> str:
        return {"fedavg": "FedAvg", "mdgan": "MD-GAN", "uagan": "UA-GAN"}.get(self.protocol, "twin")

    @property
    def centralized(self) -> bool:
        return self.protocol == "centralized"

    @property
    def overrides(self) -> tuple[str, ...]:
        if self.protocol in ("fedavg", "centralized"):
            return ()
        params = {"pi": "uniform"} if self.protocol == "uagan" else {}
        out = [f"federation.protocol={self.protocol}"]
        if params:
            out.append("federation.protocol_params={pi: uniform}")
        return tuple(out)


PARTS: dict[str, tuple[str, tuple[Method, ...]]] = {
    "sample": (
        "privacy-sample.yaml",
        (Method("fedavg"), Method("uagan"), Method("centralized")),
    ),
    "user": (
        "privacy-user.yaml",
        (Method("fedavg"), Method("mdgan"), Method("uagan"), Method("centralized")),
    ),
}
"""Each part: its scenario (scenarios/findings/) and methods. At user level the twin runs
only at ε = ∞ (user-level DP has no meaning without users): it checks the regime."""

QUICK = {
    "sample": QUICK_RUN,
    "user": (
        "gan.generator.widths=[16, 16]",
        "gan.critic.widths=[16, 16]",
        "data.n_samples=4000",
        "partition.n_clients=100",
        "federation.clients_per_round=10",
        "evaluation.n_samples=500",
        "federation.rounds=4",
        "evaluation.every=4",
    ),
}

Cell = tuple[str, Method, float]
"""(part, method, ε): one setting, run once per seed."""

EXPECTATION = (
    "Differential privacy should cost the minority first. DP-SGD costs under-represented "
    "groups more accuracy (Bagdasaryan et al. 2019) and DP synthetic data shifts minority "
    "shares (Ganev et al. 2022): a clipped, noised gradient keeps the directions many samples "
    "or clients agree on, and a 5 % mode's signal is the first to drown. So, as ε falls from ∞ "
    "through 10 and 3 to 1, the coverage of the two 5 % modes should fall earlier and further, "
    "relative to its value at ε = ∞, than the coverage of the six majority modes — at sample "
    "level (DP-SGD on every critic of the quickstart's 5 clients, and the centralized DP-SGD "
    "twin) and at user level (1,000 clients, 50 a round, the minority on 5 % of them). At user "
    "level a server-held generator releases a low-dimensional answer per step (B·d numbers "
    "against ~35k parameters for DP-FedAvg), so the same ε buys far less noise per released "
    "number: MD-GAN or UA-GAN should keep more minority coverage than DP-FedAvg at ε = 3. Keeping "
    "both 5 % modes at ε ≤ 10 in 2 of 3 seeds is a moonshot no published anchor reports."
)
RULE = (
    "(0) Each part is at the regime if its non-private matched centralized twin (ε = ∞) keeps "
    "both minority modes (coverage ≥ 0.3 on each) in ≥ 2 of 3 seeds; a part that is not is not "
    "judged, and the verdict is then undecided. (a) The minority falls first: for every method "
    "(the twin included) whose mean minority coverage at ε = ∞ is ≥ 0.3, its relative loss of "
    "minority coverage at ε = 3, 1 − cov_min(3)/cov_min(∞), exceeds its relative loss of "
    "majority coverage (mean over modes 2–7), 1 − cov_maj(3)/cov_maj(∞), by at least 0.1; "
    "agrees if this holds for every such method of both parts, undecided if no method keeps "
    "the minority at ε = ∞. (b) At user level, MD-GAN or UA-GAN beats DP-FedAvg's minority "
    "coverage at ε = 3 with the paired-by-seed bootstrap interval of the difference above 0 at "
    "the Bonferroni level for 2 comparisons (97.5 %). The verdict agrees if (a) and (b) do. "
    "The target (a method that keeps both minority modes at ε ≤ 10 in ≥ 2 of 3 seeds) is "
    "reported as met or missed, with the measured reason, apart from the verdict."
)

TITLE = "Who privacy forgets: the minority against ε, per method and level"


def _setup(quick: bool) -> str:
    return (
        "(a) Sample level — `scenarios/findings/privacy-sample.yaml`: the quickstart (8-ring, "
        "modes 0 and 1 at 5 % on client 0 of 5, MLPs 2×128, 400 rounds × 10 local steps = "
        "4,000 generator steps) with DP-SGD on every critic (per-sample clip 1, Poisson "
        "batches of 128, δ 1e-4), FedAvg, UA-GAN (π uniform: sizes are not released) and the "
        "centralized DP-SGD twin. (b) User level — `scenarios/findings/privacy-user.yaml`: "
        "1,000 clients of ~13 training points, 50 a round (Poisson), modes 0 and 1 on clients "
        "0–49, 400 rounds × 10 local steps of batch 64 (amended from 16 before any method "
        "ran: the twin missed the regime there), every release clipped as one vector with adaptive "
        "clipping to the median norm (count noise 10, accounted), δ 1e-4; FedAvg, MD-GAN, "
        "UA-GAN (π uniform), the non-private twin. ε ∈ {1, 3, 10, ∞}, σ calibrated to each "
        "before training (∞: no privacy section); seeds 0, 1, 2, paired. Preregistered in "
        "`docs/prereg-findings-11.md`"
        + (" (quick: 1 seed, MLPs 2×16, 4 rounds — smoke values that mean nothing)" * quick)
        + "."
    )


def _cov(o: Outcome) -> float:
    return minority_coverage(o, MINORITY)


def _maj(o: Outcome) -> float:
    return minority_coverage(o, MAJORITY)  # the same mean of per-mode coverages


def _mean(os_: Sequence[Outcome], value: object) -> float:
    assert callable(value)
    return float(np.mean([value(o) for o in os_])) if os_ else math.nan


@dataclass
class Judgement:
    regime: dict[str, bool]
    parts: dict[str, bool | None]
    texts: dict[str, str]
    target: bool
    target_text: str

    @property
    def decided(self) -> bool:
        """As preregistered: both parts at the regime and judged (a part not run, or not at
        the regime, leaves the verdict undecided)."""
        return (
            set(self.regime) == set(PARTS)
            and all(self.regime.values())
            and all(v is not None for v in self.parts.values())
        )

    @property
    def agrees(self) -> bool:
        return self.decided and all(self.parts.values())


def judge(res: Mapping[Cell, Sequence[Outcome]], parts: Sequence[str] = tuple(PARTS)) -> Judgement:
    """The preregistered rule (`RULE`) on the outcomes of each cell (seeds in one order), for
    the `parts` that ran (a part not run leaves the verdict undecided)."""
    regime = {}
    for part in parts:
        twin = list(res.get((part, Method("centralized"), math.inf), ()))
        regime[part] = bool(twin) and sum(keeps_all(o, MINORITY) for o in twin) >= math.ceil(
            2 * len(twin) / 3
        )
    falls: list[bool] = []
    texts_a = []
    for part in parts:
        if not regime[part]:
            continue
        for m in PARTS[part][1]:
            inf = res.get((part, m, math.inf))
            at = res.get((part, m, JUDGED_EPSILON))
            if not inf or not at or _mean(inf, _cov) < KEPT_AT_INFINITY:
                continue
            lost_min = 1 - _mean(at, _cov) / _mean(inf, _cov)
            maj_inf = _mean(inf, _maj)
            lost_maj = 1 - _mean(at, _maj) / maj_inf if maj_inf > 0 else 0.0
            ok = lost_min >= lost_maj + FALLS_FIRST - EPS
            falls.append(ok)
            texts_a.append(
                f"{part} {m.label}: minority loses {lost_min:.0%}, majority {lost_maj:.0%}"
            )
    a = all(falls) if falls else None
    b: bool | None = None
    texts_b = []
    if regime.get("user"):
        fa = res.get(("user", Method("fedavg"), JUDGED_EPSILON))
        level = bonferroni(2)
        results = []
        for p in ("mdgan", "uagan"):
            os_ = res.get(("user", Method(p), JUDGED_EPSILON))
            if not os_ or not fa:
                continue
            iv = paired(os_, fa, _cov, level)
            results.append(iv.above(0.0))
            texts_b.append(f"{Method(p).label} − FedAvg {iv.cell()} ({level:.1%})")
        b = any(results) if results else None
    met = []
    for (part, m, eps), os_ in res.items():
        if eps <= TARGET_EPSILON and sum(keeps_all(o, MINORITY) for o in os_) >= math.ceil(
            2 * len(os_) / 3
        ):
            met.append(f"{part} {m.label} at ε = {eps:g}")
    target_text = "met by " + ", ".join(met) if met else _missed(res)
    return Judgement(
        regime,
        {"a": a, "b": b},
        {
            "a": "; ".join(texts_a) or "no method kept the minority at ε = ∞",
            "b": "; ".join(texts_b) or "not measured",
        },
        bool(met),
        target_text,
    )


def _missed(res: Mapping[Cell, Sequence[Outcome]]) -> str:
    """Why the target was missed, measured: whether at ε ≤ 10 the methods kept the majority
    (then the minority fell first) or lost everything (the noise drowned the whole signal)."""
    private = {c: os_ for c, os_ in res.items() if c[2] <= TARGET_EPSILON}
    text = "missed: no method kept both minority modes at ε ≤ 10 in 2 of 3 seeds"
    if not private:
        return text
    best_maj = max(_mean(os_, _maj) for os_ in private.values())
    best_min = max(_mean(os_, _cov) for os_ in private.values())
    if best_maj < KEPT_AT_INFINITY:
        return (
            f"{text} — and none kept the majority either (best mean majority coverage at ε ≤ 10: "
            f"{best_maj:.2f}, minority {best_min:.2f}): at this budget the noise drowns the "
            "critic's whole signal, not the minority's first"
        )
    return (
        f"{text}; the best mean majority coverage at ε ≤ 10 was {best_maj:.2f}, the best "
        f"minority coverage {best_min:.2f}"
    )


def _eps_overrides(part: str, eps: float) -> tuple[str, ...]:
    if math.isinf(eps):
        return ("privacy=null",)
    return (f"privacy.target_epsilon={eps:g}",)


def _cells(part: str) -> list[Cell]:
    _, methods = PARTS[part]
    out: list[Cell] = []
    for m in methods:
        budgets = (math.inf,) if (part == "user" and m.centralized) else EPSILONS
        out += [(part, m, e) for e in budgets]
    return out


def plan(quick: bool, parts: Sequence[str] = tuple(PARTS)) -> list[tuple[Cell, tuple[str, ...]]]:
    """Every cell of the `parts` with its overrides (seed left out)."""
    out = []
    for part in parts:
        for cell in _cells(part):
            _, m, eps = cell
            overrides = (*m.overrides, *_eps_overrides(part, eps), *(QUICK[part] if quick else ()))
            out.append((cell, overrides))
    return out


def pending() -> Finding:
    """Item 11 before its full run: the design, its cost, no number."""
    n = len(plan(False)) * len(SEEDS)
    return Finding(
        number=11,
        title=TITLE,
        setup=_setup(False),
        expectation=EXPECTATION,
        rule=RULE,
        table=(
            f"*Not measured yet.* `fedgan findings --only 11` runs the preregistered design: {n} "
            "runs — sample level ≈ 1.5 CPU-min each (the quickstart's 4,000 steps with DP-SGD), "
            "user level ≈ 7 CPU-min each (400 rounds of 50 of 1,000 clients on the vectorized "
            "engine) — about 3 hours on 2 cores; it writes a table per part (minority and "
            "majority coverage, worst-group coverage, precision and the ε reached, per method "
            "and ε) and a figure of each mode's coverage against ε per method."
        ),
        verdict="Not measured yet: the verdict comes from the full run, by the rule above.",
        agrees=False,
        decided=False,
    )


def run(
    quick: bool,
    fig_dir: Path,
    n_jobs: int = 2,
    parts: Sequence[str] = tuple(PARTS),
    cache: Path | None = None,
) -> Finding:
    """Measure the `parts` (both by default; `python -m fedgan.simulator.findings.item11
    --parts sample` runs part (a) alone and stores it in docs/findings.md as item 11). With
    `cache`, each run's outcome is kept there and reused (see `batch.run_jobs`)."""
    seeds = SEEDS[:1] if quick else SEEDS
    skipped: dict[Cell, str] = {}
    jobs = []
    for cell, overrides in plan(quick, parts):
        part, m, eps = cell
        scenario = PARTS[part][0]
        from fedgan.simulator.findings.batch import SCENARIOS

        why = unavailable(SCENARIOS / scenario, [*overrides, "seed=0"], m.centralized)
        if why:
            skipped[cell] = why
            continue
        for s in seeds:
            jobs.append(
                Job(scenario, (*overrides, f"seed={s}"), (part, m.protocol, eps, s), m.centralized)
            )
    res: dict[Cell, list[Outcome]] = {}
    for o in run_jobs(jobs, n_jobs, cache):
        key_part, protocol, budget = o.key[:3]
        assert isinstance(key_part, str) and isinstance(protocol, str)
        assert isinstance(budget, float)
        res.setdefault((key_part, Method(protocol), budget), []).append(o)
    j = judge(res, parts)
    fig = _figure(res, fig_dir, parts)
    word = {True: "yes", False: "no", None: "undecided"}
    regime = ", ".join(
        f"{p}: {'yes' if j.regime[p] else 'no'}" if p in j.regime else f"{p}: not run"
        for p in PARTS
    )
    verdict = (
        f"At the regime — {regime}. (a) {j.texts['a']}: {word[j.parts['a']]}. "
        f"(b) {j.texts['b']}: {word[j.parts['b']]}. Target: {j.target_text}."
    )
    notes = "ε is what the accountant reached (≤ the target by calibration)."
    if skipped:
        notes += " Skipped, with what `fedgan validate` says of them: " + skip_note(skipped) + "."
    return Finding(
        number=11,
        title=TITLE,
        setup=_setup(quick),
        expectation=EXPECTATION,
        rule=RULE,
        table=_tables(res, skipped, parts),
        verdict=verdict,
        agrees=j.agrees,
        decided=j.decided,
        figure=fig,
        notes=notes,
        values={
            "regime": j.regime,
            "parts": j.parts,
            "target": j.target,
            "coverage": {
                f"{c[0]}/{c[1].label}/{c[2]:g}": _mean(os_, _cov) for c, os_ in res.items()
            },
        },
    )


HEADER = [
    "minority coverage",
    "majority coverage",
    "seeds keeping both",
    "worst-group coverage",
    "precision",
    "ε reached",
]


def _tables(
    res: Mapping[Cell, Sequence[Outcome]], skipped: Mapping[Cell, str], parts: Sequence[str]
) -> str:
    out = []
    for part in PARTS:
        methods = PARTS[part][1]
        if part not in parts:
            out.append(f"{part.capitalize()} level: not run.")
            continue
        rows = []
        for m in methods:
            for eps in EPSILONS:
                os_ = res.get((part, m, eps))
                label = [m.label, "∞" if math.isinf(eps) else f"{eps:g}"]
                if os_ is None:
                    if (part, m, eps) in skipped:
                        rows.append([*label, "skipped (see the note)"] + [""] * (len(HEADER) - 1))
                    continue
                rows.append(
                    [
                        *label,
                        mean_std([_cov(o) for o in os_], ".2f"),
                        mean_std([_maj(o) for o in os_], ".2f"),
                        f"{sum(keeps_all(o, MINORITY) for o in os_)} of {len(os_)}",
                        mean_std([score(o, "coverage.group_min") for o in os_], ".2f"),
                        mean_std([score(o, "precision") for o in os_], ".2f"),
                        "∞"
                        if math.isinf(eps)
                        else mean_std([o.get("privacy.epsilon") for o in os_], ".2f"),
                    ]
                )
        out.append(f"{part.capitalize()} level:\n\n" + md_table(["method", "ε", *HEADER], rows))
    return "\n\n".join(out)


def _figure(res: Mapping[Cell, Sequence[Outcome]], fig_dir: Path, parts: Sequence[str]) -> str:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(parts), figsize=(5 * len(parts), 3.6), sharey=True)
    xs = {e: i for i, e in enumerate(EPSILONS)}
    for ax, part in zip(np.atleast_1d(axes), parts, strict=True):
        methods = PARTS[part][1]
        for k, m in enumerate(methods):
            pts = [(e, res[(part, m, e)]) for e in EPSILONS if (part, m, e) in res]
            if not pts:
                continue
            color = f"C{k}"
            for mode in (*MINORITY, *MAJORITY):
                ys = [np.mean([o.group("coverage", mode) for o in os_]) for _, os_ in pts]
                minority = mode in MINORITY
                ax.plot(
                    [xs[e] for e, _ in pts],
                    ys,
                    color=color,
                    ls="-" if minority else ":",
                    lw=1.8 if minority else 0.8,
                    # Markers: a setting measured at one ε (the user-level twin) is a point.
                    marker="o" if minority else ".",
                    ms=4 if minority else 3,
                    label=m.label if mode == MINORITY[0] else None,
                )
        ax.set_xticks(range(len(EPSILONS)), ["1", "3", "10", "∞"])
        ax.set_xlabel("ε")
        ax.set_title(f"{part} level (solid: modes 0, 1; dotted: majority)")
        ax.legend(fontsize=7)
    np.atleast_1d(axes)[0].set_ylabel("coverage of the mode")
    return save_figure(fig, fig_dir, "item11-privacy.png")
