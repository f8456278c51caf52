"""One instrument, one story (issue 24): every view answers "who is forgotten?" alike.

Constructed generators with a randomly chosen forgotten subset — mixtures of 8 and 25 modes
with weights of 2–20 %, and a user's CSV grouping — are evaluated through the real code path
(the Evaluator, each client's coverage, the server's per-client rows, a run folder); the set
read from the summary tables, `inspect --by client`, the headline, the diagnosis and the
report's opening sentence must be the subset the generator left out — known by construction,
not from the code. Then the "forgotten" rule is swapped for a stub in the registry and every
view must show the stub's set instead.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import fedgan.simulator.cli as cli
import numpy as np
import pandas as pd
import pytest
from fedgan.clients.scoring import client_coverage
from fedgan.simulator.evaluate import eval_rows, make_evaluator
from fedgan.simulator.metrics.registry import RULES
from fedgan.simulator.prepare import federated_data
from fedgan.simulator.scenario import Scenario, resolved_yaml, validate
from fedgan.simulator.store import RunStore, load_run
from fedgan.simulator.summary import (
    group_views,
    headline,
    headline_rows,
    main_scope,
    story,
    summary_tables,
)
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from rich.console import Console
from typer.testing import CliRunner

runner = CliRunner()
ROUND = 7


def _scenario(data: dict[str, Any], n_clients: int = 4) -> Scenario:
    return validate(
        {
            "name": "story",
            "seed": 1,
            "data": data,
            "gan": {"generator": {"widths": [8]}, "critic": {"widths": [8]}},
            "partition": {"name": "dirichlet", "params": {"alpha": 0.5}, "n_clients": n_clients},
            "federation": {"rounds": ROUND, "local_steps": 1},
            "evaluation": {"every": ROUND, "n_samples": 2500, "min_group_size": 20},
        }
    )


def _mixture_fake(ds: Any, keep: list[int], rng: np.random.Generator) -> np.ndarray:
    """2,500 samples of the true mixture restricted to the modes `keep`, weights
    renormalised, drawn from the definition (means, σ) — a generator that forgets the rest."""
    m = ds.modes
    w = np.zeros(m.n_modes)
    w[keep] = m.weights[keep]
    comp = rng.choice(m.n_modes, size=2500, p=w / w.sum())
    return (m.means[comp] + m.sigma[comp, None] * rng.standard_normal((2500, 2))).astype(np.float32)


def _write_run(s: Scenario, fake: np.ndarray, out: Path) -> Path:
    """A run folder holding one evaluation of `fake`: the global rows and diagnosis, and each
    client's rows as the server writes them from the clients' own coverage counts."""
    from fedgan.server.evaluation import client_rows

    data = federated_data(s)
    ev = make_evaluator(s, data.held)(fake)
    store = RunStore.create(out, s.name, resolved_yaml(s), {})
    store.add_metrics(eval_rows(ev, ROUND, "global"))
    scores = {c: client_coverage(s, data, c, fake) for c in range(data.n_clients)}
    rows = client_rows(data, scores, ev, s.evaluation.min_group_size)
    store.add_metrics([{"round": ROUND, **r} for r in rows])
    store.add_diagnosis(
        {
            "round": ROUND,
            "scope": "global",
            "client": -1,
            "label": ev.diagnosis.label,
            "reason": ev.diagnosis.reason,
        }
    )
    return store.path


def _views(path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, set[str]]:
    """The forgotten set of the first grouping as each view shows it (labels as strings)."""
    from fedgan.simulator.report import render

    run = load_run(path)
    m = run.metrics
    scope = main_scope(m)
    (grouping, *_) = [v.grouping for v in group_views(m, scope, ROUND, run.scenario)]
    out: dict[str, set[str]] = {}
    # the summary's per-group table: its "forgotten" column
    view = next(v for v in group_views(m, scope, ROUND, run.scenario) if v.grouping == grouping)
    out["summary"] = {str(g) for g in view.forgotten}
    text = _render(summary_tables(m, scenario=run.scenario, width=400))
    out["summary text"] = _table_column(text, grouping, "forgotten")
    # the headline: the count and the names after it
    rows = dict(headline_rows(headline(m), _names_after_count(text)))
    count = rows[next(k for k in rows if k.startswith("groups forgotten"))]
    out["headline"] = set(_split(count.partition(": ")[2]))
    assert int(count.split(" / ")[0]) == len(out["headline"])
    # inspect --by client: the client × group coverage columns marked "!"
    monkeypatch.setattr(cli, "console", Console(width=400, file=io.StringIO()))
    res = runner.invoke(cli.app, ["inspect", str(path), "--by", "client"])
    assert res.exit_code == 0, res.output
    shown = cli.console.file.getvalue()  # type: ignore[attr-defined]
    out["inspect --by client"] = _marked_columns(shown, f"client × {grouping} coverage")
    # the diagnosis file
    diag = pd.read_csv(path / "diagnosis.csv")
    reason = str(diag["reason"].iloc[0])
    out["diagnosis"] = set(re.findall(rf"\b{re.escape(grouping)}=([^ ,;()]+) \(mass", reason))
    # the report's opening sentence
    html = render(run)
    opening = re.search(r'id="story"[^>]*>(.*?)</p>', html, re.S)
    assert opening is not None, "the report has no opening paragraph"
    out["report"] = _story_set(_unescape(opening.group(1)), grouping)
    out["story"] = _story_set(story(m), grouping)
    return out


def _render(renderables: list[Any]) -> str:
    console = Console(width=400, file=io.StringIO(), color_system=None)
    for r in renderables:
        console.print(r)
    return str(console.file.getvalue())  # type: ignore[attr-defined]


def _table_column(text: str, grouping: str, column: str) -> set[str]:
    """Groups whose `column` cell reads "yes" in the printed per-group table."""
    lines = text.splitlines()
    start = next(i for i, x in enumerate(lines) if x.startswith(f"{grouping} ") and column in x)
    header = lines[start].replace("n real", "n_real").split()
    col = header.index(column)
    found = set()
    for line in lines[start + 2 :]:
        cells = line.split()
        if len(cells) != len(header):
            break
        if cells[col] == "yes":
            found.add(cells[0].rstrip("*†"))
    return found


def _names_after_count(text: str) -> list[str]:
    line = next(x for x in text.splitlines() if x.startswith("groups forgotten"))
    return _split(line.partition(": ")[2].rsplit("  ", 1)[0]) if ": " in line else []


def _split(names: str) -> list[str]:
    return [n.strip() for n in names.split(",") if n.strip()]


def _marked_columns(text: str, title: str) -> set[str]:
    lines = text.splitlines()
    start = next(i for i, x in enumerate(lines) if x.startswith(title))
    header = next(x for x in lines[start + 1 :] if x.startswith("client ") and "×" not in x)
    return {c.rstrip("!").rstrip("*") for c in header.split() if c.endswith("!")}


def _story_set(text: str, grouping: str) -> set[str]:
    """The groups a story sentence names as forgotten for `grouping`."""
    if f"no {grouping} is forgotten" in text:
        return set()
    m = re.search(rf"\b{re.escape(grouping)} (.*?) forgotten", text)
    assert m is not None, text
    names = re.sub(r"\s*\([^)]*\)", "", m.group(1))
    return {part.strip() for part in re.split(r"[;,]", names) if part.strip()}


def _unescape(s: str) -> str:
    import html

    return html.unescape(re.sub(r"<[^>]+>", "", s))


def _assert_one_story(views: dict[str, set[str]], expected: set[str]) -> None:
    for name, found in views.items():
        assert found == expected, f"{name} shows {sorted(found)}, expected {sorted(expected)}"


# ---- the property ------------------------------------------------------------------------------
SETTINGS = settings(
    max_examples=3,
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],  # a failure prints its draws; shrinking is slow
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@SETTINGS
@given(data=st.data())
@pytest.mark.parametrize("kind", ["ring", "grid"])
def test_every_view_names_the_modes_a_generator_leaves_out(
    kind: str, data: st.DataObject, tmp_path_factory: pytest.TempPathFactory, monkeypatch: Any
) -> None:
    k = 8 if kind == "ring" else 25
    raw = data.draw(st.lists(st.floats(0.02, 0.20), min_size=k, max_size=k), label="weights")
    w = np.array(raw) / np.sum(raw)
    params: dict[str, Any] = {"weights": [float(x) for x in w]}
    if kind == "ring":
        params["n_modes"] = 8
    lost = sorted(data.draw(st.sets(st.integers(0, k - 1), max_size=k - 1), label="forgotten"))
    s = _scenario({"dataset": kind, "n_samples": 12000, "params": params})
    held = federated_data(s).held
    sizes = held.groups["mode"].value_counts()
    rng = np.random.default_rng(len(lost) * 31 + k)
    fake = _mixture_fake(held, [i for i in range(k) if i not in lost], rng)
    path = _write_run(s, fake, tmp_path_factory.mktemp("run"))
    # A left-out mode with fewer than min_group_size held-out points is rare: the rule says
    # nothing of it (by its definition), so it is expected in no view.
    expected = {str(g) for g in lost if sizes.get(g, 0) >= 20}
    _assert_one_story(_views(path, monkeypatch), expected)


CATEGORIES = ("a", "b", "c", "d", "e", "f")


def _csv_scenario(tmp: Path, shares: np.ndarray) -> Scenario:
    """A user's table: 6 categories of `kind` at their shares, each in its own corner."""
    rng = np.random.default_rng(5)
    n = 8000
    kind = rng.choice(CATEGORIES, size=n, p=shares)
    centres = {c: (4.0 * np.cos(i), 4.0 * np.sin(i)) for i, c in enumerate(CATEGORIES)}
    xy = np.array([centres[c] for c in kind]) + 0.3 * rng.standard_normal((n, 2))
    path = tmp / "table.csv"
    pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1], "kind": kind}).to_csv(path, index=False)
    return _scenario(
        {"dataset": "table", "n_samples": n, "params": {"path": str(path), "groups": ["kind"]}}
    )


@SETTINGS
@given(data=st.data())
def test_every_view_names_the_categories_a_generator_leaves_out_of_a_csv(
    data: st.DataObject, tmp_path_factory: pytest.TempPathFactory, monkeypatch: Any
) -> None:
    raw = data.draw(st.lists(st.floats(0.02, 0.20), min_size=6, max_size=6), label="shares")
    shares = np.array(raw) / np.sum(raw)
    lost = data.draw(st.sets(st.sampled_from(CATEGORIES), max_size=5), label="forgotten")
    s = _csv_scenario(tmp_path_factory.mktemp("csv"), shares)
    train = federated_data(s).train
    keep = ~train.groups["kind"].astype(str).isin(lost).to_numpy()
    rng = np.random.default_rng(len(lost))
    rows = train.X[keep][rng.integers(0, int(keep.sum()), 2500)]
    fake = rows + 0.02 * rng.standard_normal(rows.shape).astype(np.float32)
    path = _write_run(s, fake, tmp_path_factory.mktemp("run"))
    _assert_one_story(_views(path, monkeypatch), set(lost))


def test_a_stubbed_rule_changes_every_view(tmp_path: Path, monkeypatch: Any) -> None:
    """The registry's `forgotten` rule swapped for a stub that always answers modes 3 and 5
    (which the generator does produce): every view shows exactly {3, 5}, and the clients'
    served shares follow it (the `served` rule reads the same set)."""
    calls = []

    def stub(ratios: Any, sizes: Any, min_group_size: int) -> list[Any]:
        calls.append(dict(ratios))
        return [g for g in ratios if g in (3, 5)]

    monkeypatch.setitem(RULES._items, "forgotten", stub)  # noqa: SLF001 - the swap under test
    s = _scenario({"dataset": "ring", "n_samples": 8000, "params": {}})
    held = federated_data(s).held
    fake = _mixture_fake(held, list(range(8)), np.random.default_rng(0))
    path = _write_run(s, fake, tmp_path)
    assert calls, "the evaluation did not ask the registry"
    _assert_one_story(_views(path, monkeypatch), {"3", "5"})
    m = load_run(path).metrics
    data = federated_data(s)
    served = m[m["metric"] == "eval.served_share"].set_index("client")["value"]
    labels = data.train.groups["mode"].to_numpy()
    for c, idx in enumerate(data.client_held):
        assert served[c] == pytest.approx(np.mean(~np.isin(labels[idx], [3, 5])))


def test_a_metric_added_through_the_registry_reaches_the_table(tmp_path: Path) -> None:
    """`evaluation.metrics: [group_frechet]` adds the per-group Fréchet distance: for a
    generator of the exact mixture it is small for every mode, and a mode shifted by 0.1
    (5σ) reads ≈ 0.01 more — ‖Δμ‖² — than the others; a forgotten mode has no samples: NaN."""
    raw = {"dataset": "ring", "n_samples": 8000, "params": {}}
    s = validate(
        {
            **_scenario(raw).model_dump(mode="json"),
            "evaluation": {"metrics": ["group_frechet"], "n_samples": 2500, "every": ROUND},
        }
    )
    held = federated_data(s).held
    rng = np.random.default_rng(2)
    fake = _mixture_fake(held, [1, 2, 3, 4, 5, 6, 7], rng)
    comp_means = held.modes.means
    near3 = np.linalg.norm(fake - comp_means[3], axis=1) < 0.2
    fake[near3] += np.array([0.1, 0.0], dtype=np.float32)
    ev = make_evaluator(s, held)(fake)
    fd = {
        r["group"]: r["value"]
        for r in ev.rows
        if r["metric"] == "frechet_distance" and r.get("group", "") != ""
    }
    assert np.isnan(fd[0])
    assert fd[3] == pytest.approx(0.01, abs=0.003)
    assert all(fd[g] < 0.002 for g in (1, 2, 4, 5, 6, 7))


def test_an_unknown_metric_is_refused_at_its_path() -> None:
    from fedgan.simulator.scenario import ScenarioError

    raw = _scenario({"dataset": "ring", "n_samples": 800, "params": {}}).model_dump(mode="json")
    raw["evaluation"]["metrics"] = ["group_frechett"]
    with pytest.raises(ScenarioError, match=r"evaluation\.metrics.*group_frechett"):
        validate(raw)


def test_client_0_is_the_worst_served_on_the_quickstart_state() -> None:
    """The quickstart's FedAvg samples at round 400 (seed 0): modes 0 and 1 — all on client 0
    — are forgotten, so client 0 is served on its majority-mode points only: its held-out
    points outside modes 0 and 1 over all of them (counted here from the partition), the
    smallest share of the five; every other client holds no forgotten mode (share 1)."""
    from fedgan.server.evaluation import client_rows
    from fedgan.simulator.scenario import load

    root = Path(__file__).resolve().parents[2]
    s = load(root / "scenarios" / "quickstart.yaml")
    data = federated_data(s)
    fake = np.load(Path(__file__).with_name("fedavg-quickstart-seed0.npy"))
    ev = make_evaluator(s, data.held)(fake)
    scores = {c: client_coverage(s, data, c, fake) for c in range(data.n_clients)}
    rows = client_rows(data, scores, ev, s.evaluation.min_group_size)
    served = {r["client"]: r["value"] for r in rows if r["metric"] == "eval.served_share"}
    labels = data.train.groups["mode"].to_numpy()
    idx = data.client_held[0]
    majority = int(np.sum(~np.isin(labels[idx], [0, 1])))
    assert served[0] == pytest.approx(majority / len(idx))
    assert 0.55 < served[0] < 0.75  # the count: 288 of 448 = 0.64
    assert all(served[c] == 1.0 for c in range(1, 5))
    (worst,) = [r["value"] for r in rows if r["metric"] == "worst_client"]
    assert worst == 0
    # client 0's own rows of modes 0 and 1 (≥ 20 points each there): nothing covered
    own = {
        r["group"]: r["value"]
        for r in rows
        if r["client"] == 0 and r["metric"] == "eval.coverage" and r.get("group", "") != ""
    }
    assert own[0] == 0.0 and own[1] == 0.0
    assert min(own[g] for g in range(2, 8)) > 0.5
