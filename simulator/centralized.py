"""The centralized run: one GAN trained on all the data — the one-client baseline."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from simulator.data import Dataset, load_dataset
from simulator.evaluate import Evaluation, Evaluator
from simulator.gan.diagnostics import lipschitz_metrics
from simulator.gan.train import GAN
from simulator.scenario import Scenario, resolved_yaml
from simulator.seeding import derive_seed, numpy_rng, torch_generator
from simulator.store import RunStore


@dataclass
class RunResult:
    """A finished run: its folder, its tidy metrics table and the last evaluation."""

    path: Path
    metrics: pd.DataFrame
    last: Evaluation | None
    """The last global evaluation, when the run happened in this process."""


def stratified_split(
    ds: Dataset, holdout: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) indices, holding out `holdout` of every group of the first column.

    A group with ≥ 2 points keeps at least one point on each side, so a 2 % minority mode is
    both trained on and evaluated.
    """
    col = ds.groups.columns[0]
    train, held = [], []
    for _, idx in ds.groups.groupby(col, sort=True).indices.items():
        idx = rng.permutation(idx)
        n_hold = int(round(holdout * len(idx)))
        if len(idx) >= 2:
            n_hold = min(max(n_hold, 1), len(idx) - 1)
        held.append(idx[:n_hold])
        train.append(idx[n_hold:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(held))


def prepare_data(s: Scenario) -> tuple[Dataset, Dataset]:
    """Load the scenario's dataset and split it into (train, held-out)."""
    ds = load_dataset(s.data.dataset, s.data.n_samples, derive_seed(s.seed, "data"), s.data.params)
    tr, ho = stratified_split(ds, s.data.holdout, numpy_rng(s.seed, "split"))
    return ds.subset(tr), ds.subset(ho)


def make_evaluator(s: Scenario, held: Dataset) -> Evaluator:
    e = s.evaluation
    return Evaluator(
        held,
        k=e.k,
        group_by=e.group_by or None,
        mode_threshold=e.mode_threshold,
        min_group_size=e.min_group_size,
        n_boot=e.n_boot,
        seed=derive_seed(s.seed, "eval"),
        device=s.device,
    )


def eval_rows(ev: Evaluation, round_: int, scope: str, client: int = -1) -> list[dict[str, Any]]:
    return [{"round": round_, "scope": scope, "client": client, **r} for r in ev.rows]


def run_centralized(
    s: Scenario,
    out_dir: str | Path = "runs",
    on_eval: Callable[[int, int, Evaluation], None] | None = None,
) -> RunResult:
    """Train one GAN on all the training data for `s.train.steps` generator steps,
    evaluating every `s.evaluation.every` steps; write the run folder and return it."""
    train, held = prepare_data(s)
    gan = GAN(s.gan.config(), train.X.shape[1], train.image_shape)
    evaluator = make_evaluator(s, held)
    store = RunStore.create(
        out_dir,
        s.name,
        resolved_yaml(s),
        {
            "engine": "centralized",
            "seed": s.seed,
            "n_train": len(train.X),
            "n_holdout": len(held.X),
        },
    )
    store.write_table("partition.csv", _group_counts(train))
    state = gan.init_state(derive_seed(s.seed, "init"))
    gen = torch_generator(s.seed, "train")
    data = torch.as_tensor(train.X)
    total, every = s.train.steps, s.evaluation.every
    last: Evaluation | None = None
    while state.step < total:
        t0 = time.perf_counter()
        n = min(every, total - state.step)
        state, history = gan.train(state, data, n, gen, total_steps=total)
        t_train = time.perf_counter() - t0
        means = dict(pd.DataFrame(history).mean())
        lip_gen = torch_generator(s.seed, "lipschitz", state.step)
        means.update(lipschitz_metrics(gan, state, data, lip_gen))
        store.add_metrics(
            (
                {
                    "round": state.step,
                    "scope": "centralized",
                    "metric": f"train.{k}",
                    "value": v,
                    "n": n,
                }
                for k, v in means.items()
            ),
            flush=False,
        )
        fake = gan.sample(
            state, s.evaluation.n_samples, torch_generator(s.seed, "sample", state.step)
        )
        fake_np = fake.numpy()
        try:
            last = evaluator(fake_np)
        except FloatingPointError as exc:  # training diverged: say so, keep what was written
            store.event("generator_diverged", round=state.step, detail=str(exc))
            store.add_metrics(
                [{"round": state.step, "scope": "centralized", "metric": "diverged", "value": 1.0}]
            )
            last = None
            break
        store.add_metrics(eval_rows(last, state.step, "centralized"), flush=False)
        for w in last.warnings:
            store.event("warning", round=state.step, detail=w)
        store.add_diagnosis(
            {
                "round": state.step,
                "scope": "centralized",
                "client": -1,
                "label": last.diagnosis.label,
                "reason": last.diagnosis.reason,
            }
        )
        store.save_samples(state.step, fake_np)
        store.save_checkpoint(state.step, state.arrays())
        store.add_timings(
            [
                {"round": state.step, "phase": "train", "seconds": t_train},
                {
                    "round": state.step,
                    "phase": "evaluate",
                    "seconds": time.perf_counter() - t0 - t_train,
                },
            ]
        )
        store.flush()  # one rewrite per evaluation: train rows, evaluation rows, timings
        if on_eval is not None:
            on_eval(state.step, total, last)
    return RunResult(store.path, store.metrics(), last)


def _group_counts(ds: Dataset) -> pd.DataFrame:
    col = ds.groups.columns[0]
    counts = ds.groups[col].value_counts().sort_index()
    return pd.DataFrame({"client": -1, "group_by": col, "group": counts.index, "n": counts.values})
