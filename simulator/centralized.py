"""The centralized run: one GAN trained on all the data — the one-client baseline."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from fedgan.simulator.data import Dataset
from fedgan.simulator.data.encoding import output_spans
from fedgan.simulator.messages import TRAIN
from fedgan.simulator.prepare import condition_of, dp_sgd, prepare_data
from fedgan.simulator.progress import Progress, ProgressHook, ProgressLog
from fedgan.simulator.scenario import Scenario, resolved_yaml
from fedgan.simulator.seeding import derive_seed, torch_generator
from fedgan.simulator.store import RunStore

if TYPE_CHECKING:  # torch and the metrics: imported by a run, not by the preflight's data check
    from fedgan.simulator.evaluate import Evaluation


@dataclass
class RunResult:
    """A finished run: its folder, its tidy metrics table and the last evaluation."""

    path: Path
    metrics: pd.DataFrame
    last: Evaluation | None
    """The last global evaluation, when the run happened in this process."""


def run_centralized(
    s: Scenario, out_dir: str | Path = "runs", progress: ProgressHook | None = None
) -> RunResult:
    """Train one GAN on all the training data for `s.train.steps` generator steps,
    evaluating every `s.evaluation.every` steps; write the run folder and return it.
    `progress` is told of every evaluation (also written to the folder's progress file)."""
    import torch
    from fedgan.simulator.evaluate import evaluate_generator, make_evaluator, record_feature_space
    from fedgan.simulator.gan.diagnostics import lipschitz_metrics
    from fedgan.simulator.gan.train import GAN

    train, held = prepare_data(s)
    condition = condition_of(s)
    gan = GAN(
        replace(s.gan.config(), dp=dp_sgd(s)),
        train.X.shape[1],
        train.image_shape,
        output_spans(train.info),  # a mixed table's softmax heads
        condition,  # training-by-sampling over the pooled rows (the federated runs' twin)
    )
    sampler = condition.sampler(np.arange(train.n)) if condition is not None else None
    evaluator = make_evaluator(s, held, train)
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
    record_feature_space(store, evaluator.space)
    report = ProgressLog(store.path, progress)
    store.write_table("partition.csv", _group_counts(train))
    state = gan.init_state(derive_seed(s.seed, "init"))
    gen = torch_generator(s.seed, "train")
    data = torch.as_tensor(train.X)
    total, every = s.train.steps, s.evaluation.every
    last: Evaluation | None = None
    phase = "train"
    try:
        while state.step < total:
            t0 = time.perf_counter()
            n = min(every, total - state.step)
            phase = "train"
            state, history = gan.train(state, data, n, gen, total_steps=total, sampler=sampler)
            t_train = time.perf_counter() - t0
            means = dict(pd.DataFrame(history).mean())
            lip_gen = torch_generator(s.seed, "lipschitz", state.step)
            if condition is None:  # the estimates probe the critic at unconditioned points
                means.update(lipschitz_metrics(gan, state, data, lip_gen))
            store.add_metrics(
                (
                    {
                        "round": state.step,
                        "scope": "centralized",
                        "metric": TRAIN + str(k),
                        "value": v,
                        "n": n,
                    }
                    for k, v in means.items()
                ),
                flush=False,
            )
            if s.privacy is not None:  # the DP-SGD twin: ε spent after these steps
                store.add_metrics(privacy_rows(s, len(train.X), state.step), flush=False)
            phase = "evaluate"
            last = evaluate_generator(
                s, store, evaluator, gan, state, state.step, "centralized", "generator_diverged"
            )
            if last is None:  # training diverged: say so, keep what was written
                diverged = {"round": state.step, "scope": "centralized", "metric": "diverged"}
                store.add_metrics([{**diverged, "value": 1.0}])
                break
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
            report(Progress(state.step, total, last.summary))
    except Exception as exc:  # a plug-in's bug: say where in the run folder, then propagate
        store.record_failure(exc, state.step, phase)
        raise
    return RunResult(store.path, store.metrics(), last)


def privacy_rows(s: Scenario, n_train: int, step: int) -> list[dict[str, Any]]:
    """ε at δ after `step` DP-SGD steps on `n_train` points (scope `centralized`), beside
    Flower's no-amplification account."""
    from fedgan.simulator.privacy import budget

    p = s.privacy
    assert p is not None
    sizes = (n_train,)
    eps = budget.run_epsilon(s, sizes, step)
    rows = {
        "privacy.epsilon": max(eps.values()),
        "privacy.delta": p.delta,
        "privacy.epsilon_flower": budget.flower_epsilon(s, sizes, step),
    }
    return [
        {"round": step, "scope": "centralized", "metric": k, "value": v} for k, v in rows.items()
    ]


def _group_counts(ds: Dataset) -> pd.DataFrame:
    col = ds.groups.columns[0]
    counts = ds.groups[col].value_counts().sort_index()
    return pd.DataFrame({"client": -1, "group_by": col, "group": counts.index, "n": counts.values})
