"""Item 12's preregistration: the text quotes the module's constants, and the rule's parameters
are the defaults `group_dro` runs with."""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import pytest
from fedgan.server.strategies.fair import GroupDROFedAvg
from fedgan.simulator.findings import every_skew as f12
from fedgan.simulator.findings.batch import Outcome
from fedgan.simulator.findings.fedmethods import RECOMMENDED, Method
from fedgan.simulator.weighting import GroupDRO

ROOT = Path(__file__).resolve().parents[2]


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("> ", " ")).strip()


def test_preregistration_quotes_the_expectation_and_rule_verbatim() -> None:
    doc = _flat((ROOT / "docs" / "prereg-every-skew.md").read_text(encoding="utf-8"))
    assert _flat(f12.EXPECTATION) in doc
    assert _flat(f12.RULE) in doc
    assert "η = 0.1, floor = 0.2" in doc
    assert f12.PARAMS == {"step_size": 0.1, "floor": 0.2}


def test_every_entry_point_defaults_to_the_preregistered_parameters() -> None:
    for fn in (GroupDRO.__init__, GroupDROFedAvg.__init__):
        p = inspect.signature(fn).parameters
        assert {k: p[k].default for k in ("step_size", "floor")} == f12.PARAMS


def test_the_skews_scenarios_exist() -> None:
    for where, _ in f12.SKEWS.values():
        assert (ROOT / where).is_file(), where


# --- the runner's pieces, on hand-made outcomes -----------------------------------------------


def _o(cov: tuple[float, float], precision: float, mass: float = 0.05, seed: int = 0) -> Outcome:
    return Outcome(
        key=("x", seed),
        summary={"precision": precision},
        groups={
            "coverage": {"0": cov[0], "1": cov[1]},
            "mode_mass": {"0": mass, "1": mass},
        },
    )


def test_judge_meets_and_misses_by_hand() -> None:
    twin = [_o((0.6, 0.5), 0.9, seed=s) for s in range(3)]
    res = {
        ("one-of-5", f12.TWIN): twin,
        # FedAvg + group_dro: keeps both in 2 of 3, precision 0.85 ≥ 0.9 × 0.9 = 0.81 → met.
        ("one-of-5", Method("fedavg", "group_dro")): [
            _o((0.4, 0.35), 0.85, seed=0),
            _o((0.5, 0.2), 0.85, seed=1),
            _o((0.31, 0.3), 0.85, seed=2),
        ],
        # UA-GAN + group_dro: keeps none, minority mass 0 → dropped.
        ("one-of-5", Method("uagan", "group_dro")): [
            _o((0.0, 0.0), 0.95, 0.0, seed=s) for s in range(3)
        ],
        ("one-of-5", Method("uagan")): [_o((0.1, 0.1), 0.95, 0.0, seed=s) for s in range(3)],
        # Twin misses here: not judged (group_dro absent does not count against it).
        ("two-of-20", f12.TWIN): [_o((0.1, 0.5), 0.9, seed=s) for s in range(3)],
    }
    j = f12.judge(res)
    assert j.regime == {"one-of-5": True, "two-of-20": False}
    assert j.met == {"fedavg": True, "uagan": False}
    assert j.reasons["uagan one-of-5"].startswith("dropped")
    assert j.best["one-of-5"].startswith("FedAvg + group_dro (2 of 3")
    # group_dro − none under UA-GAN: 0 − 0.1 in every seed.
    (comp,) = [c for c in j.comparisons if "uagan" in c]
    assert "group_dro − none" in comp and "−0.10" in comp.replace("-", "−")


def test_precision_below_the_bar_is_the_majority_paying() -> None:
    res = {
        ("one-of-10", f12.TWIN): [_o((0.6, 0.6), 1.0, seed=s) for s in range(3)],
        ("one-of-10", Method("fedavg", "group_dro")): [
            _o((0.6, 0.6), 0.8, seed=s) for s in range(3)
        ],
    }
    j = f12.judge(res)
    assert not j.met["fedavg"]
    assert "the majority paid" in j.reasons["fedavg one-of-10"]


def test_grown_budget_stops_when_doubling_gains_little() -> None:
    def twins(*covs: float) -> dict[int, list[Outcome]]:
        return {2**i: [_o((c, c), 1.0)] for i, c in enumerate(covs)}

    assert f12.grown_budget(twins(0.1, 0.3, 0.31)) == 2  # 2× → 4× gains 0.01
    assert f12.grown_budget(twins(0.1, 0.11)) == 1
    assert f12.grown_budget(twins(0.1, 0.2, 0.4)) == 4  # still gaining: the largest measured


def test_plan_runs_every_method_with_the_preregistered_parameters() -> None:
    jobs = f12.plan(quick=False)
    assert len(jobs) == len(f12.SKEWS) * (1 + 2 * 4) * 3
    dro = [j for (sk, m), j in jobs if m == Method("uagan", "group_dro") and sk == "one-of-5"]
    assert len(dro) == 3
    (pp,) = [o for o in dro[0].overrides if o.startswith("federation.protocol_params=")]
    assert json.loads(pp.split("=", 1)[1])["weighting"] == {
        "name": "group_dro",
        "params": f12.PARAMS,
    }
    fed = [j for (sk, m), j in jobs if m == Method("fedavg", "group_dro")][0]
    assert 'strategy={"name": "group_dro"' in " ".join(fed.overrides)
    # Every planned run is one the code can run (the preflight of `fedgan validate`).
    from fedgan.simulator.findings.fedmethods import unavailable

    seen = set()
    for (sk, m), j in jobs:
        if (sk, m) in seen:
            continue
        seen.add((sk, m))
        assert unavailable(Path(j.scenario), j.overrides, j.centralized) == "", (sk, m)


def test_pending_states_the_design_and_no_number() -> None:
    f = f12.pending()
    assert f.number == 12 and f.outcome == "undecided"
    assert f.expectation == f12.EXPECTATION and f.rule == f12.RULE
    assert "Not measured yet" in f.table and "item12" in f.table


def test_interim_writes_what_the_cache_holds_and_runs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    from fedgan.simulator.findings import batch

    def run(_job: object) -> Outcome:
        raise AssertionError("an interim item ran a job")

    monkeypatch.setattr(batch, "_one", run)
    # The cache holds one-of-5's twin (3 seeds) and one seed of its UA-GAN + group_dro.
    held = {(f12.TWIN, s): _o((0.6, 0.4), 0.8, seed=s) for s in (0, 1, 2)}
    held[(Method("uagan", "group_dro"), 0)] = _o((0.2, 0.0), 0.5)
    for (sk, m), job in f12.plan(quick=False):
        seed = int(job.overrides[-1].removeprefix("seed="))
        if sk == "one-of-5" and (m, seed) in held:
            out = dataclasses.asdict(held[(m, seed)])
            (tmp_path / f"{batch.job_digest(job)}.json").write_text(json.dumps(out))
    f = f12.run(quick=False, cache=tmp_path, interim=True)
    assert f.outcome == "undecided" and f.values == {"done": 4, "runs": 108}
    assert "one-of-5 4 of 27" in f.verdict and "two-of-20 0 of 27" in f.verdict
    # Means by hand: the twin's minority coverage (0.6 + 0.4) / 2, UA-GAN's (0.2 + 0) / 2.
    assert "| twin | 0.50 ± 0.00 | 3 of 3 |" in f.table
    assert "| UA-GAN + group_dro | 0.10 ± 0.00 | 0 of 1 |" in f.table
    assert "one-of-10" not in f.table, "a skew with no run has no table"
    with pytest.raises(ValueError, match="cache"):
        f12.run(quick=False, interim=True)


def test_the_recommended_scenario_is_the_setting_item_12_measured() -> None:
    """README's recommendation runs exactly item 12's one-of-5 UA-GAN + group_dro cell: the
    same resolved scenario (data, partition, GAN, budget, protocol, weighting, parameters),
    name and description aside."""
    from fedgan.simulator.scenario import load

    (job,) = [
        j
        for (sk, m), j in f12.plan(quick=False)
        if sk == "one-of-5" and m == RECOMMENDED and j.overrides[-1] == "seed=0"
    ]
    measured = json.loads(load(job.scenario, list(job.overrides)).to_json())
    recommended = json.loads(load(ROOT / "scenarios" / "protocols" / "recommended.yaml").to_json())
    for d in (measured, recommended):
        d.pop("name"), d.pop("description")
    assert recommended == measured
    assert recommended["federation"]["protocol"] == "uagan"
    assert recommended["federation"]["protocol_params"]["weighting"] == {
        "name": "group_dro",
        "params": f12.PARAMS,
    }
    assert recommended["partition"]["name"] == "explicit"


def test_the_cells_the_rule_reads_run_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """A sweep cut short still decides: the twins and group_dro cells precede the others."""
    calls: list[list[tuple[object, ...]]] = []

    def fake(jobs: list[object], n_jobs: int, cache: object) -> list[Outcome]:
        calls.append([j.key for j in jobs])  # type: ignore[attr-defined]
        return [_o((0.6, 0.6), 0.9) for _ in jobs]

    monkeypatch.setattr(f12, "run_jobs", fake)
    f12.run(quick=False)
    keys = calls[-1]  # the methods' sweep, after two-of-20's twins (1×, 2×)
    assert len(keys) == 108
    first = [k[1] == "centralized" or k[2] == "group_dro" for k in keys]
    assert first == sorted(first, reverse=True) and sum(first) == 4 * 3 * 3
    assert f12.decisive(("one-of-5", f12.TWIN))
    assert f12.decisive(("two-of-20", Method("fedavg", "group_dro")))
    assert not f12.decisive(("one-of-5", Method("uagan", "agnostic")))
    assert not f12.decisive(("one-of-5", Method("uagan")))
    # The default records folder is tracked (not ignored), so committed runs survive a checkout.
    ignored = (ROOT / ".gitignore").read_text().split()
    rel = f12.RECORDS.relative_to(ROOT).as_posix()
    assert not any(rel.startswith(p.strip("/")) for p in ignored)


def _item12_rows() -> dict[str, dict[str, list[str]]]:
    """docs/findings.md's item 12 tables: skew → method → cells (means and counts)."""
    text = (ROOT / "docs" / "findings.md").read_text(encoding="utf-8")
    section = text.split('<a id="12"></a>', 1)[1].split("<a id=", 1)[0]
    out: dict[str, dict[str, list[str]]] = {}
    for block in re.split(r"\n(?=[a-z0-9.-]+:\n\n\|)", section)[1:]:
        skew, table = block.split(":\n\n", 1)
        for line in table.splitlines():
            cells = [c.strip() for c in line.strip("|").split("|")]
            if len(cells) == 5 and cells[0] not in ("method", "---"):
                out.setdefault(skew.strip(), {})[cells[0]] = cells[1:]
    return out


def test_readme_quotes_item_12_as_stored() -> None:
    """One story: the README's recommendation quotes the stored item 12 — for every skew where
    the recommended setting was measured, its mean minority coverage and precision and the
    twin's — and calls the target missed exactly when the item does."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Keeping the minority", 1)[1].split("\n## ", 1)[0]
    flat = " ".join(section.split())
    rows = _item12_rows()
    assert set(rows) >= {"one-of-5", "one-of-10", "dirichlet-0.05"}
    label = RECOMMENDED.label
    for skew, table in rows.items():
        if label not in table:
            continue
        cov, _kept, _mass, prec = (c.split(" ± ")[0] for c in table[label])
        twin_cov, twin_prec = table["twin"][0].split(" ± ")[0], table["twin"][3].split(" ± ")[0]
        for value in (cov, prec, twin_cov, twin_prec):
            assert value in flat, (skew, value)
    findings = (ROOT / "docs" / "findings.md").read_text(encoding="utf-8")
    verdict = findings.split('<a id="12"></a>', 1)[1].split("**Verdict:", 1)[1][:40]
    if "missed" in verdict or "disagrees" in verdict:
        assert "target is missed" in flat.lower()
