"""Item 12 (issue 27): one weighting for every skew — the design fixed before any run, and its
runner.

Preregistered in docs/prereg-every-skew.md (this module's constants, `EXPECTATION` and `RULE`
verbatim; a test keeps them equal). The group-level rule is `group_dro`
(`simulator.weighting.group_dro_weights`), its parameters the defaults committed with it
(`GROUP_DRO_STEP_SIZE`, `GROUP_DRO_FLOOR`). `python -m fedgan.simulator.findings.item12`
runs it (resumable from the runs kept in `RECORDS`) and stores the item in docs/findings.md."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from fedgan.simulator.findings.batch import SCENARIOS, Job, Outcome, read_cached, run_jobs
from fedgan.simulator.findings.bootstrap import bonferroni
from fedgan.simulator.findings.common import QUICK_RUN, Finding, md_table, mean_std
from fedgan.simulator.findings.fedmethods import (
    NONE,
    Method,
    keeps_all,
    minority_coverage,
    minority_mass_ratio,
    paired,
    score,
    skip_note,
    unavailable,
)
from fedgan.simulator.weighting import GROUP_DRO_FLOOR, GROUP_DRO_STEP_SIZE

PARAMS = {"step_size": GROUP_DRO_STEP_SIZE, "floor": GROUP_DRO_FLOOR}
"""`group_dro`'s parameters for every run of the item (not tuned per skew)."""

ROOT = SCENARIOS.parent.parent
SKEWS: dict[str, tuple[str, tuple[str, ...]]] = {
    "one-of-5": ("scenarios/quickstart.yaml", ()),
    "one-of-10": ("scenarios/protocols/minority-fedavg.yaml", ()),
    "dirichlet-0.05": ("scenarios/findings/federation.yaml", ("partition.params.alpha=0.05",)),
    "two-of-20": ("scenarios/protocols/2of20-fedavg.yaml", ()),
}
"""The four skews: the scenario each runs (FedAvg; UA-GAN by `federation.protocol=uagan`) and
its overrides. Dirichlet 0.05 is item 10's split, over its 5 clients."""
GROWN = "two-of-20"
"""The skew whose budget is grown (`BUDGET_GAIN`, `BUDGET_MAX`)."""

PROTOCOLS = ("fedavg", "uagan")
WEIGHTINGS = ("none", "agnostic", "coverage_weighted", "group_dro")
"""Per protocol: unweighted, the two per-client rules at their item-10 parameters (agnostic
step 0.5, coverage_weighted q 2), and the group-level rule."""
SEEDS = (0, 1, 2)
KEEP = 0.3
"""A minority mode is kept at coverage ≥ this (`simulator.metrics.diagnosis.KEEP_COVERAGE`)."""
PRECISION_SHARE = 0.9
"""The setting's mean precision must reach this share of the twin's."""
BUDGET_GAIN = 0.02
"""two-of-20: the budget doubles until the twin's minority coverage gains less than this."""
BUDGET_MAX = 4
"""… or the budget reaches this multiple of the scenario's."""
CPU_HOURS = 20.0
"""The whole item's CPU budget; every run is saved (resumable across sessions)."""
RECORDS = ROOT / "benchmarks" / "findings-runs" / "item12"
"""Where each run's outcome is kept by default: a tracked folder, committed as the sweep goes,
because a sweep of several CPU-hours spans sessions and an ignored cache does not survive a
fresh checkout (94 of 108 runs were lost that way once)."""
MINORITY = ("0", "1")
WEIGHT = 0.05
"""The minority modes' true weight (mass ratio = mass / weight)."""
DROPPED = 0.1
"""A minority mass ratio below this reads "dropped"; above it with low coverage, "blurred"."""

EXPECTATION = (
    "Where the minority lives on one client (one-of-5, one-of-10), group_dro does what agnostic "
    "does — its weight goes to the one client holding the uncovered groups — and keeps both "
    "minority modes under UA-GAN in at least 2 of 3 seeds. Under Dirichlet 0.05, where every "
    "client lacks some modes, its per-group signal does not chase one client per round as "
    "agnostic does, and UA-GAN + group_dro keeps more minority coverage than UA-GAN + agnostic. "
    "FedAvg + group_dro keeps the minority only where FedAvg learns the majority at all. "
    "two-of-20 is the open case: we expect it to miss there at the scenario's budget."
)
RULE = (
    "The target is met by one setting (protocol, weighting group_dro, the parameters PARAMS) "
    "if, in every skew where the centralized twin keeps both minority modes (coverage ≥ 0.3 "
    "each) in at least 2 of 3 seeds, the setting keeps both in at least 2 of 3 seeds and its "
    "mean precision is at least 0.9 × the twin's mean precision. Otherwise it is missed, and "
    "the verdict names, per skew, the best setting (most seeds keeping both, then mean "
    "minority coverage) and the measured reason (minority mass ratio ≈ 0: dropped; > 0 with "
    "low coverage: blurred; precision below the bar: the majority paid). Per protocol and "
    "skew, group_dro against each other weighting: the paired (by seed) bootstrap 95 % "
    "interval of the difference in minority coverage, Bonferroni-corrected over the "
    "comparisons of the item."
)
TITLE = "One weighting for every skew: group DRO against the per-client rules"

TWIN = Method("centralized")
Cell = tuple[str, Method]
"""(skew, method): one setting, run once per seed."""


def methods() -> list[Method]:
    """Every protocol with every weighting (unweighted first)."""
    return [Method(p, NONE if w == "none" else w) for p in PROTOCOLS for w in WEIGHTINGS]


def _kept(os_: Sequence[Outcome]) -> int:
    return sum(keeps_all(o, MINORITY) for o in os_)


def _cov(o: Outcome) -> float:
    return minority_coverage(o, MINORITY)


def _mean(os_: Sequence[Outcome], value: object) -> float:
    assert callable(value)
    return float(np.mean([value(o) for o in os_])) if os_ else math.nan


def _precision(o: Outcome) -> float:
    return score(o, "precision")


def decisive(cell: Cell) -> bool:
    """Whether the rule's verdict reads `cell` (the twin, or a protocol + group_dro); the other
    weightings enter only the tables and the comparisons."""
    return cell[1] == TWIN or cell[1].rule == "group_dro"


def majority_of(n: int) -> int:
    """Seeds of `n` that make "at least 2 of 3" (⌈2n/3⌉)."""
    return math.ceil(2 * n / 3)


def grown_budget(twins: Mapping[int, Sequence[Outcome]]) -> int:
    """The two-of-20 budget multiple: the smallest m (1, 2, 4, …) at which doubling gains the
    twin less than `BUDGET_GAIN` mean minority coverage, else the largest measured (≤ 4)."""
    ms = sorted(twins)
    for a, b in zip(ms, ms[1:], strict=False):
        if _mean(twins[b], _cov) - _mean(twins[a], _cov) < BUDGET_GAIN:
            return a
    return ms[-1] if ms else 1


@dataclass
class Judgement:
    regime: dict[str, bool]
    met: dict[str, bool]
    """Per protocol: group_dro meets the target in every skew at the regime."""
    best: dict[str, str]
    reasons: dict[str, str]
    comparisons: list[str]

    @property
    def decided(self) -> bool:
        return any(self.regime.values())


def judge(res: Mapping[Cell, Sequence[Outcome]]) -> Judgement:
    """The preregistered rule on the outcomes (seeds in one order per cell)."""
    skews = sorted({c[0] for c in res}, key=list(SKEWS).index)
    regime = {}
    for sk in skews:
        twin = res.get((sk, TWIN), ())
        regime[sk] = bool(twin) and _kept(twin) >= majority_of(len(twin))
    met: dict[str, bool] = {}
    reasons: dict[str, str] = {}
    for p in PROTOCOLS:
        ok = []
        for sk in (s for s in skews if regime[s]):
            os_ = res.get((sk, Method(p, "group_dro")), ())
            bar = PRECISION_SHARE * _mean(res[(sk, TWIN)], _precision)
            keeps = bool(os_) and _kept(os_) >= majority_of(len(os_))
            precise = bool(os_) and _mean(os_, _precision) >= bar
            ok.append(keeps and precise)
            if not os_:
                reasons[f"{p} {sk}"] = "not run"
            elif not keeps:
                ratio = _mean(os_, lambda o: minority_mass_ratio(o, MINORITY, WEIGHT))
                word = "dropped" if ratio < DROPPED else "blurred"
                reasons[f"{p} {sk}"] = f"{word} (minority mass ratio {ratio:.2f})"
            elif not precise:
                reasons[f"{p} {sk}"] = (
                    f"the majority paid (precision {_mean(os_, _precision):.2f} < {bar:.2f})"
                )
        met[p] = bool(ok) and all(ok)
    best = {}
    for sk in skews:
        cands = [(m, os_) for (s, m), os_ in res.items() if s == sk and m != TWIN and os_]
        if cands:
            m, os_ = max(cands, key=lambda mo: (_kept(mo[1]), _mean(mo[1], _cov)))
            best[sk] = f"{m.label} ({_kept(os_)} of {len(os_)}, coverage {_mean(os_, _cov):.2f})"
    comps = []
    family = len(PROTOCOLS) * len(SKEWS) * (len(WEIGHTINGS) - 1)
    level = bonferroni(family)
    for sk in skews:
        for p in PROTOCOLS:
            dro = res.get((sk, Method(p, "group_dro")))
            for w in WEIGHTINGS[:-1]:
                other = res.get((sk, Method(p, NONE if w == "none" else w)))
                if not dro or not other:
                    continue
                iv = paired(dro, other, _cov, level)
                comps.append(f"{sk} {p}: group_dro − {w} {iv.cell()}")
    return Judgement(regime, met, best, reasons, comps)


def plan(quick: bool, budgets: Mapping[str, int] | None = None) -> list[tuple[Cell, Job]]:
    """Every cell's jobs (seeds included) at the skews' budgets (multiples, default 1)."""
    seeds = SEEDS[:1] if quick else SEEDS
    out = []
    for sk, (scenario, base) in SKEWS.items():
        m_budget = (budgets or {}).get(sk, 1)
        for m in [TWIN, *methods()]:
            over = (*base, *m.overrides, *_budget(scenario, m_budget), *(QUICK if quick else ()))
            for s in seeds:
                key = (sk, m.protocol, m.rule, m_budget, s)
                out.append(
                    ((sk, m), Job(str(ROOT / scenario), (*over, f"seed={s}"), key, m.centralized))
                )
    return out


QUICK = QUICK_RUN


def _budget(scenario: str, multiple: int) -> tuple[str, ...]:
    """Overrides running `scenario` at `multiple` × its rounds (evaluated at the end)."""
    if multiple == 1:
        return ()
    from fedgan.simulator.scenario import load

    s = load(ROOT / scenario)
    assert s.federation is not None
    rounds = s.federation.rounds * multiple
    return (f"federation.rounds={rounds}", f"evaluation.every={rounds}")


def run(quick: bool, n_jobs: int = 2, cache: Path | None = None, interim: bool = False) -> Finding:
    """Measure the item: the twins first (two-of-20's at 1, 2, 4 × its budget, until doubling
    gains < `BUDGET_GAIN`), then every method at each skew's budget.

    With `interim` (needs `cache`), nothing runs: the item is written from the runs the cache
    already holds, its tables partial and its verdict pending (a long sweep's progress)."""
    if interim and cache is None:
        raise ValueError("an interim item reads the cache: give cache")

    def outcomes(jobs: Sequence[Job]) -> list[Outcome | None]:
        """Each job's outcome in order: run (or read back), or with `interim` read from the
        cache, None where it holds none."""
        if not interim:
            return list(run_jobs(jobs, n_jobs, cache))  # a copy typed with None (invariance)
        assert cache is not None
        return [read_cached(j, cache) for j in jobs]

    budgets: dict[str, int] = {}
    twins: dict[int, list[Outcome]] = {}
    m_budget = 1
    while True:
        jobs = [j for (sk, m), j in plan(quick, {GROWN: m_budget}) if sk == GROWN and m == TWIN]
        got = [o for o in outcomes(jobs) if o is not None]
        if len(got) < len(jobs):  # interim: this budget's twins are not all measured yet
            break
        twins[m_budget] = got
        if quick or m_budget >= BUDGET_MAX or (len(twins) > 1 and grown_budget(twins) < m_budget):
            break
        m_budget *= 2
    budgets[GROWN] = grown_budget(twins)
    skipped: dict[Cell, str] = {}
    todo: list[tuple[Cell, Job]] = []
    for cell, job in plan(quick, budgets):
        if cell in skipped:
            continue
        why = unavailable(Path(job.scenario), job.overrides, job.centralized)
        if why:
            skipped[cell] = why
            continue
        todo.append((cell, job))
    # The cells the rule reads (twins, group_dro) first: a sweep cut short still decides.
    todo.sort(key=lambda cj: not decisive(cj[0]))
    res: dict[Cell, list[Outcome]] = {}
    for (cell, _), o in zip(todo, outcomes([j for _, j in todo]), strict=True):
        if o is not None:
            res.setdefault(cell, []).append(o)
    f = Finding(
        number=12,
        title=TITLE,
        setup=_setup(quick, budgets, twins),
        expectation=EXPECTATION,
        rule=RULE,
        table=_tables(res, skipped),
        verdict="",
        agrees=False,
        decided=False,
        notes="Skipped: " + skip_note(skipped) if skipped else "",
    )
    if interim:
        done = sum(len(v) for v in res.values())
        f.verdict = _pending_verdict(res, todo, done)
        f.values = {"done": done, "runs": len(todo)}
        return f
    j = judge(res)
    f.verdict = _verdict(j, budgets)
    f.agrees = any(j.met.values())
    f.decided = j.decided
    f.values = {
        "regime": j.regime,
        "met": j.met,
        "budget": budgets,
        "coverage": {f"{c[0]}/{c[1].label}": _mean(os_, _cov) for c, os_ in res.items()},
    }
    return f


def _pending_verdict(
    res: Mapping[Cell, Sequence[Outcome]], todo: Sequence[tuple[Cell, Job]], done: int
) -> str:
    """An interim item's verdict line: how far the sweep is, per skew; no judgement."""
    per = []
    for sk in SKEWS:
        n = sum(1 for (s, _), _ in todo if s == sk)
        k = sum(len(v) for (s, _), v in res.items() if s == sk)
        per.append(f"{sk} {k} of {n}")
    return (
        f"Pending: {done} of {len(todo)} runs measured ({', '.join(per)}); the tables above are "
        "partial and not judged — the verdict comes from the full run, by the rule above."
    )


def _setup(quick: bool, budgets: Mapping[str, int], twins: Mapping[int, Sequence[Outcome]]) -> str:
    grown = ", ".join(f"{m}×: {_mean(os_, _cov):.2f}" for m, os_ in sorted(twins.items()))
    grown = grown or "not measured yet"
    return (
        "Four skews (`SKEWS`): minority modes 0 and 1 (5 % each) on one client of 5 (the "
        "quickstart), on one client of 10, Dirichlet 0.05 over 5 clients (item 10), and on 2 of "
        "20 clients with Dirichlet 0.1 elsewhere (10 a round). FedAvg and UA-GAN, each "
        "unweighted, + agnostic (step 0.5), + coverage_weighted (q 2), + group_dro (η 0.1, "
        "floor 0.2), beside the matched centralized twin; seeds 0, 1, 2 paired. two-of-20's "
        f"budget: {budgets.get(GROWN, 1)}× (twin minority coverage by budget: {grown}). "
        "Preregistered in `docs/prereg-every-skew.md`; every run's outcome is kept in "
        "`benchmarks/findings-runs/item12/` (committed), from which this item is rebuilt"
        + (" (quick: 1 seed, MLPs 2×16, 4 rounds — smoke values that mean nothing)" * quick)
        + "."
    )


def _verdict(j: Judgement, budgets: Mapping[str, int]) -> str:
    regime = ", ".join(f"{sk}: {'yes' if v else 'no'}" for sk, v in j.regime.items())
    met = [p for p, v in j.met.items() if v]
    head = f"Target met by {', '.join(p + ' + group_dro' for p in met)}" if met else "Target missed"
    why = "; ".join(f"{k}: {v}" for k, v in j.reasons.items())
    best = "; ".join(f"{sk}: {b}" for sk, b in j.best.items())
    return (
        f"{head}. Twin at the regime — {regime}. "
        + (f"Where group_dro missed: {why}. " if why else "")
        + f"Best setting per skew: {best}. Comparisons (Bonferroni over the item): "
        + ("; ".join(j.comparisons) or "none")
        + "."
    )


HEADER = ["minority coverage", "seeds keeping both", "minority mass ratio", "precision"]


def _tables(res: Mapping[Cell, Sequence[Outcome]], skipped: Mapping[Cell, str]) -> str:
    out = []
    for sk in SKEWS:
        rows = []
        for m in [TWIN, *methods()]:
            os_ = res.get((sk, m))
            if not os_:
                if (sk, m) in skipped:
                    rows.append([m.label, "skipped (see the note)", "", "", ""])
                continue
            rows.append(
                [
                    m.label,
                    mean_std([_cov(o) for o in os_], ".2f"),
                    f"{_kept(os_)} of {len(os_)}",
                    mean_std([minority_mass_ratio(o, MINORITY, WEIGHT) for o in os_], ".2f"),
                    mean_std([_precision(o) for o in os_], ".2f"),
                ]
            )
        if rows:
            out.append(f"{sk}:\n\n" + md_table(["method", *HEADER], rows))
    return "\n\n".join(out) or "Not measured yet."


def pending() -> Finding:
    """Item 12 before its full run: the design, its cost, no number."""
    n = len(plan(False)) + 2 * len(SEEDS)  # and two-of-20's twins at 2× and 4×
    return Finding(
        number=12,
        title=TITLE,
        setup=_setup(False, {}, {}),
        expectation=EXPECTATION,
        rule=RULE,
        table=(
            f"*Not measured yet.* `python -m fedgan.simulator.findings.item12` runs "
            f"the preregistered design: about {n} runs (5–8 CPU-hours on 2 cores, resumable); it "
            "writes a table per skew (minority coverage, seeds keeping both, minority mass "
            "ratio, precision, per method beside the twin)."
        ),
        verdict="Not measured yet: the verdict comes from the full run, by the rule above.",
        agrees=False,
        decided=False,
    )
