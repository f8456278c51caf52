"""Evaluation of a generator against held-out real data: PRDC, modes, groups, diagnosis.

Produces tidy rows (metric, value, n, group_by, group) that the caller stamps with round,
scope and client, plus a headline summary and the failure diagnosis; `evaluate_generator` is
the sample → evaluate → rows → diagnosis sequence federated and centralized runs share.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import fedgan.simulator.data.encoding as encoding
import numpy as np
import pandas as pd
import torch
from fedgan.simulator.data import Dataset
from fedgan.simulator.devices import resolve_device
from fedgan.simulator.gan.train import GAN, GANState
from fedgan.simulator.metrics import (
    Diagnosis,
    diagnose,
    expected_coverage,
    frechet_distance,
    mode_metrics,
    prdc,
)
from fedgan.simulator.metrics.context import DecodedRows
from fedgan.simulator.metrics.diagnosis import MIN_GROUP_DENSITY, ForgottenGroup, GroupFidelity
from fedgan.simulator.metrics.features import (
    FeatureSpace,
    LabelModes,
    feature_space,
    label_mode_metrics,
)
from fedgan.simulator.metrics.forgetting import ball_hits, ball_pairs
from fedgan.simulator.metrics.groups import (
    Grouping,
    group_labels,
    group_sort_key,
    grouping_columns,
    grouping_name,
)
from fedgan.simulator.metrics.prdc import PRDC
from fedgan.simulator.metrics.registry import DEFAULT_METRICS, METRICS, GroupingContext, Row
from fedgan.simulator.prepare import feature_problems as feature_problems
from fedgan.simulator.prepare import scenario_feature_space
from fedgan.simulator.scenario import Scenario
from fedgan.simulator.seeding import derive_seed, torch_generator
from fedgan.simulator.store import RunStore, atomic_write_text


@dataclass
class Evaluation:
    """The outcome of one evaluation: tidy rows, a headline summary and the diagnosis."""

    rows: list[Row]
    summary: dict[str, float]
    diagnosis: Diagnosis
    warnings: list[str] = field(default_factory=list)
    """E.g. groups with too few held-out points for their values to mean much."""
    forgotten: dict[str, list[Any]] = field(default_factory=dict)
    """Per grouping (`group_by` name), the groups forgotten (the registry's `forgotten` rule)."""


def image_labeller(
    ds: Dataset,
    train: Dataset | None = None,
    features: str | None = None,
) -> tuple[Callable[[np.ndarray], np.ndarray] | None, Callable[[np.ndarray], np.ndarray] | None]:
    """(feature map, mode label map) of `ds`'s feature space (`metrics.features.feature_space`:
    the digit classifier for 8×8 digits, a classifier trained on `train` for other images,
    the TorchScript module `features`); (None, None) for data compared in data space."""
    space = feature_space(ds, train, features)
    return space.embed, space.labels


class Evaluator:
    """Evaluates generated samples against one held-out real set.

    `real` is the held-out dataset (its groups give the per-group tables, one per entry of
    `group_by`: a column, or a list of columns for intersectional groups). Image data are
    compared in a feature space (`metrics.features.feature_space`: the digit classifier's for
    8×8 digits, else a classifier trained on `train` — the real training split; default `real`
    itself — or the TorchScript module `features`), everything else in data space; `space`
    gives one ready-made. `device`
    ("cpu", "cuda", "auto" or a torch.device) is where PRDC's k-NN work runs. Per grouping,
    the registry's group metrics run (`simulator.metrics.registry`: always `prdc` and `mass`,
    then `metrics`), and the diagnosis reads the groups the `mass` rows call forgotten.
    """

    def __init__(
        self,
        real: Dataset,
        k: int = 5,
        group_by: list[Grouping] | None = None,
        mode_threshold: float = 3.0,
        min_group_size: int = 20,
        n_boot: int = 0,
        seed: int = 0,
        device: str | torch.device = "cpu",
        metrics: list[str] | None = None,
        train: Dataset | None = None,
        features: str | None = None,
        space: FeatureSpace | None = None,
    ) -> None:
        self.real = real
        self.device = resolve_device(device)
        self.k = k
        self.group_by: list[Grouping] = group_by or [str(c) for c in real.groups.columns]
        used = [c for g in self.group_by for c in grouping_columns(g)]
        missing = [c for c in used if c not in real.groups.columns]
        if missing or not all(grouping_columns(g) for g in self.group_by):
            raise ValueError(
                f"group columns {missing or '[]'} are not in the dataset; "
                f"it has {list(real.groups.columns)}"
            )
        # One label per held-out point and grouping (intersections joined: "F|north").
        self.labels = {grouping_name(g): group_labels(real.groups, g) for g in self.group_by}
        # Groupings whose columns the generator writes (a table's categorical columns): the
        # generated rows are also grouped by their generated value (`group_declared`).
        self.encoding = real.info.get("encoding")
        generated = set(encoding.categorical_columns(self.encoding)) if self.encoding else set()
        self.generated = {
            grouping_name(g): g for g in self.group_by if set(grouping_columns(g)) <= generated
        }
        # A table's held-out rows in the user's units, decoded once (`column_fidelity`).
        self._real_rows = encoding.decode(self.encoding, real.X) if self.encoding else None
        self.mode_threshold = mode_threshold
        self.min_group_size = min_group_size
        self.n_boot = n_boot
        self.seed = seed
        extra = [m for m in metrics or [] if m not in DEFAULT_METRICS]
        self.metrics = [*DEFAULT_METRICS, *extra]
        for name in self.metrics:
            METRICS.get(name)  # an unknown name fails here, not at the first evaluation
        self.space = space if space is not None else feature_space(real, train, features)
        """The feature space (its `info` goes to the run's env.json: `record_feature_space`)."""
        self._features, self._labels = self.space.embed, self.space.labels
        self.real_feats = self._features(real.X) if self._features else real.X

    def __call__(self, fake: np.ndarray) -> Evaluation:
        """fake [M, d] generated points in data space."""
        fake = np.asarray(fake, dtype=np.float32)
        rows: list[Row] = []
        summary: dict[str, float] = {}
        warnings: list[str] = []
        n_real, n_fake = len(self.real_feats), len(fake)

        if not np.isfinite(fake).all():
            bad = int((~np.isfinite(fake)).any(axis=1).sum())
            raise FloatingPointError(f"{bad} of {n_fake} generated points are not finite")
        fake_feats = self._features(fake) if self._features else fake
        res = prdc(self.real_feats, fake_feats, k=self.k, device=self.device)
        exp_cov = expected_coverage(n_real, n_fake, self.k)
        for name, value, n in (
            ("precision", res.precision, n_fake),
            ("recall", res.recall, n_real),
            ("density", res.density, n_fake),
            ("coverage", res.coverage, n_real),
            ("expected_coverage", exp_cov, n_real),
        ):
            rows.append({"metric": name, "value": value, "n": n})
            summary[name] = float(value)

        if self._features is not None:
            fd = frechet_distance(self.real_feats, fake_feats)
            rows.append({"metric": "frechet_distance", "value": fd, "n": n_fake})
            summary["frechet_distance"] = fd

        self._mode_rows(fake, rows, summary)

        forgotten: dict[str, list[Any]] = {}
        lost_points = np.zeros(n_real, dtype=bool)
        named: list[ForgottenGroup] = []
        blurred: list[GroupFidelity] = []
        pairs = ball_pairs(self.real_feats, fake_feats, res.real_radii)  # once, every grouping
        decoded = None
        if self.encoding is not None and self._real_rows is not None:
            decoded = DecodedRows(
                self._real_rows,
                encoding.decode(self.encoding, fake),
                frozenset(encoding.categorical_columns(self.encoding)),
            )
        for col, real_labels in self.labels.items():
            declared = self._declared(col, fake)
            ctx = self._context(col, real_labels, fake_feats, res, pairs, declared, decoded)
            before = len(rows)
            for name in self.metrics:
                for row in METRICS.get(name)(ctx):
                    rows.append({**row, "group_by": col})
            lost = _forgotten_in(rows[before:])
            forgotten[col] = [g for g in ctx.groups if str(g) in lost]
            in_lost = np.isin(real_labels.astype(str).to_numpy(), sorted(lost))
            lost_points |= in_lost
            cov = _by_group(rows[before:], "coverage")
            ratio = _by_group(rows[before:], "mass_ratio")
            named += [
                ForgottenGroup(f"{col}={g}", ratio.get(str(g), float("nan")), cov.get(str(g), 0.0))
                for g in forgotten[col]
            ]
            blurred += self._blurred(col, rows[before:], lost)
            small = [
                g for g, n in zip(ctx.groups, ctx.sizes, strict=True) if n < self.min_group_size
            ]
            if small:
                warnings.append(
                    f"groups {small} of {col!r} have fewer than "
                    f"{self.min_group_size} held-out points: their values swing widely"
                )
        first = next(iter(self.labels), "")
        for key, metric in (
            ("worst_group_coverage", "coverage.group_min"),
            ("coverage_difference", "coverage.difference"),
        ):
            stat = _grouping_value(rows, first, metric)
            if stat is not None:
                summary[key] = stat
        rest = res.coverage_per_real[~lost_points]
        rest_coverage = float(rest.mean()) if len(rest) else float("nan")
        summary["rest_coverage"] = rest_coverage
        # Totals cannot see a forgotten small group (a 2 % mode moves recall by 0.02): its
        # generated mass can, through the one rule every view reads.
        diag = diagnose(
            res.precision,
            res.recall,
            res.density,
            res.coverage,
            exp_cov,
            forgotten=named,
            blurred=blurred,
            rest_coverage=rest_coverage,
        )
        return Evaluation(rows, summary, diag, warnings, forgotten)

    def _blurred(self, col: str, rows: list[Row], lost: set[str]) -> list[GroupFidelity]:
        """Groups of `col` not forgotten whose own samples (≥ min_group_size of them) have
        density below the diagnosis' threshold: a blurred group the totals average away."""
        density = {
            str(r["group"]): r for r in rows if r["metric"] == "density" and r["group"] != ""
        }
        precision = _by_group(rows, "precision")
        return [
            GroupFidelity(f"{col}={g}", precision.get(g, float("nan")), float(r["value"]))
            for g, r in density.items()
            if g not in lost
            and r["n"] >= self.min_group_size
            and not r["value"] >= MIN_GROUP_DENSITY
        ]

    def _context(
        self,
        col: str,
        real_labels: pd.Series,
        fake_feats: np.ndarray,
        res: PRDC,
        pairs: tuple[np.ndarray, np.ndarray],
        fake_labels: pd.Series | None = None,
        decoded: DecodedRows | None = None,
    ) -> GroupingContext:
        """The `GroupingContext` of grouping `col` at this evaluation (`fake_labels`: the
        generated rows' groups by their generated values; `decoded`: a table's rows)."""
        groups = sorted(pd.unique(real_labels).tolist(), key=group_sort_key)
        lookup = {g: i for i, g in enumerate(groups)}
        codes = np.fromiter((lookup[v] for v in real_labels), dtype=np.intp, count=len(real_labels))
        hits = ball_hits(pairs, codes, len(groups), len(fake_feats))
        return GroupingContext(
            grouping=col,
            labels=real_labels,
            groups=groups,
            codes=codes,
            real=self.real_feats,
            fake=fake_feats,
            result=res,
            hits=hits,
            min_group_size=self.min_group_size,
            n_boot=self.n_boot,
            seed=self.seed,
            fake_labels=fake_labels,
            decoded=decoded,
        )

    def _declared(self, col: str, fake: np.ndarray) -> pd.Series | None:
        """Each generated row's group under grouping `col` by its generated values (fake
        [M, d] in data space); None when the generator does not write the grouping's columns."""
        g = self.generated.get(col)
        if g is None or self.encoding is None:
            return None
        frame = encoding.generated_groups(self.encoding, fake, grouping_columns(g))
        return group_labels(frame, g)

    def _mode_rows(self, fake: np.ndarray, rows: list[Row], summary: dict[str, float]) -> None:
        """Append mode metrics (mixtures: 3σ protocol; digits: classifier labels), if any."""
        if self.real.modes is not None:
            m = self.real.modes
            gm = mode_metrics(fake, m.means, m.sigma, m.weights, threshold=self.mode_threshold)
            ids = np.arange(m.n_modes)  # mixture mode ids are 0..K−1 (the "mode" column)
            mm = LabelModes(
                gm.modes_captured, ids, gm.mass_per_mode, gm.reverse_kl, gm.min_mass_ratio, 0.0
            )
            extra = {"high_quality_rate": gm.high_quality_rate}
        elif self._labels is not None and (modes := self.space.modes(self.real)) is not None:
            mm = label_mode_metrics(self._labels(fake), *modes)
            extra = {"off_support_rate": mm.off_support_rate}
        else:
            return
        n = len(fake)
        base = {
            "modes_captured": mm.modes_captured,
            "modes_total": len(mm.mass_per_mode),
            "reverse_kl": mm.reverse_kl,
            "min_mass_ratio": mm.min_mass_ratio,
            **extra,
        }
        for name, value in base.items():
            rows.append({"metric": name, "value": float(value), "n": n})
            summary[name] = float(value)
        col = self.space.mode_column or self.real.groups.columns[0]
        for mode, mass in zip(mm.mode_ids.tolist(), mm.mass_per_mode.tolist(), strict=True):
            rows.append(
                {
                    "metric": "mode_mass",
                    "value": float(mass),
                    "n": n,
                    "group_by": col,
                    "group": mode,
                }
            )


def make_evaluator(s: Scenario, held: Dataset, train: Dataset | None = None) -> Evaluator:
    """The scenario's evaluator against the held-out set `held`, in the feature space of
    `scenario_feature_space` (`train`: the real training split; default the scenario's)."""
    e = s.evaluation
    return Evaluator(
        held,
        k=e.k,
        group_by=list(e.group_by) or None,
        mode_threshold=e.mode_threshold,
        min_group_size=e.min_group_size,
        n_boot=e.n_boot,
        seed=derive_seed(s.seed, "eval"),
        device=s.device,
        metrics=list(e.metrics),
        space=scenario_feature_space(s, held, train),
    )


def record_feature_space(store: RunStore, space: FeatureSpace) -> None:
    """The feature space in the run folder: its description under `feature_space` in
    env.json (classifier accuracy, cache file, ...), its warnings as `warning` events (once:
    a resumed run with the same space adds none)."""
    if not space.info and not space.warnings:
        return
    path = store.path / "env.json"
    try:
        env = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        env = {}
    before = env.get("feature_space")
    same = isinstance(before, dict) and all(
        before.get(k) == space.info.get(k) for k in ("kind", "key", "accuracy", "features")
    )
    env["feature_space"] = space.info
    atomic_write_text(path, json.dumps(env, indent=2, default=str))
    if not same:
        for w in space.warnings:
            store.event("warning", detail=w)


def eval_rows(ev: Evaluation, round_: int, scope: str, client: int = -1) -> list[Row]:
    """`ev`'s tidy rows stamped with round, scope and client."""
    return [{"round": round_, "scope": scope, "client": client, **r} for r in ev.rows]


def evaluate_generator(
    s: Scenario,
    store: RunStore,
    evaluator: Evaluator,
    gan: GAN,
    state: GANState,
    round_: int,
    scope: str,
    diverged: str,
) -> Evaluation | None:
    """One evaluation, recorded: `evaluation.n_samples` points from `state`'s generator (its EMA
    when it keeps one; noise stream `sample`, `round_`) → samples file → evaluation → tidy rows,
    warnings and diagnosis in `store`. Non-finite points are event `diverged` and give None.
    The rows are added unflushed: the caller writes them with the rest of its round."""
    fake = generated(s, gan, state, round_)
    store.save_samples(round_, fake)
    return record_evaluation(s, store, evaluator, fake, round_, scope, diverged)


def generated(s: Scenario, gan: GAN, state: GANState, round_: int) -> np.ndarray:
    """The points [evaluation.n_samples, d] an evaluation of `state`'s generator scores."""
    gen = torch_generator(s.seed, "sample", round_)
    return gan.sample(state, s.evaluation.n_samples, gen).numpy()


def record_evaluation(
    s: Scenario,
    store: RunStore,
    evaluator: Evaluator,
    fake: np.ndarray,
    round_: int,
    scope: str,
    diverged: str,
) -> Evaluation | None:
    """`fake` [M, d] against `evaluator`'s real set: rows, warnings and diagnosis of `scope` in
    `store` (unflushed); non-finite points are event `diverged` and give None."""
    try:
        ev = evaluator(fake)
    except FloatingPointError as exc:
        store.event(diverged, round=round_, detail=str(exc))
        return None
    store.add_metrics(eval_rows(ev, round_, scope), flush=False)
    for w in ev.warnings:
        store.event("warning", round=round_, detail=w)
    store.add_diagnosis(
        {
            "round": round_,
            "scope": scope,
            "client": -1,
            "label": ev.diagnosis.label,
            "reason": ev.diagnosis.reason,
        }
    )
    return ev


def _forgotten_in(rows: list[Row]) -> set[str]:
    """The groups (as strings) a grouping's rows call forgotten."""
    return {str(r["group"]) for r in rows if r["metric"] == "forgotten" and r["value"] >= 0.5}


def _by_group(rows: list[Row], metric: str) -> dict[str, float]:
    """{group (as a string): value} of one metric in a grouping's rows."""
    return {
        str(r["group"]): float(r["value"])
        for r in rows
        if r["metric"] == metric and r["group"] != ""
    }


def _grouping_value(rows: list[Row], grouping: str, metric: str) -> float | None:
    """A grouping-wide row's value (group ""), None when not written."""
    for r in rows:
        if r.get("group_by") == grouping and r["metric"] == metric and r.get("group", "") == "":
            return float(r["value"])
    return None
