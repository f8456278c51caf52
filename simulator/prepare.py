"""What every run builds from a scenario, shared by the centralized run, the clients and the
server: the data and its held-out split (`prepare_data`), the federated split and partition
(`federated_data`: `FederatedData`), the GAN template (`make_gan`), the round-0 state every
client and the server start from (`initial_state`, `critic_state`) and the pooled held-out set
as the clients' coverage scores use it (`pooled_reference`).

Framework-free, and light at import: torch comes in with the GAN, when a run builds one, so
`fedgan validate` can build the data and the partition without it.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from fedgan.simulator.cohorts import steps_for
from fedgan.simulator.data import Dataset, load_dataset
from fedgan.simulator.data.base import Modes
from fedgan.simulator.data.encoding import output_spans
from fedgan.simulator.grouping import group_labels, group_sort_key, grouping_name
from fedgan.simulator.messages import CRITIC_STATE, generator_travels, select
from fedgan.simulator.partition import Partition, partition
from fedgan.simulator.scenario import DataSpec, Scenario
from fedgan.simulator.seeding import derive_seed, numpy_rng

if TYPE_CHECKING:  # torch: imported by a run, not by the preflight's data check
    from fedgan.simulator.gan.conditional import Condition
    from fedgan.simulator.gan.state import DPSGD
    from fedgan.simulator.gan.train import GAN, GANState
    from fedgan.simulator.metrics.features import FeatureSpace


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
    """Load the scenario's dataset and split it into (train, held-out). Cached per data
    section and seed: the preflight check builds it, the run then reuses it. A table's
    encoding (vocabularies, normalizers) is fitted on the training rows only (pooled): the
    loader fitted it on every row, held-out ones included."""
    return _prepare(_data_key(s))


def _data_key(s: Scenario) -> str:
    return json.dumps([s.data.model_dump(mode="json"), s.seed], sort_keys=True)


@functools.lru_cache(maxsize=4)
def _split(key: str) -> tuple[Dataset, Dataset]:
    """The dataset split into (train, held-out), encoded as the loader encoded it."""
    data, seed = json.loads(key)
    spec = DataSpec.model_validate(data)
    ds = load_dataset(spec.dataset, spec.n_samples, derive_seed(seed, "data"), spec.params)
    tr, ho = stratified_split(ds, spec.holdout, numpy_rng(seed, "split"))
    return ds.subset(tr), ds.subset(ho)


@functools.lru_cache(maxsize=4)
def _prepare(key: str) -> tuple[Dataset, Dataset]:
    train, held = _split(key)
    return _refit(train, held, None)


def _refit(
    train: Dataset, held: Dataset, client_rows: list[np.ndarray] | None
) -> tuple[Dataset, Dataset]:
    """A table's sets re-encoded from the training rows (`data.table.refit`): pooled, or with
    `client_rows` from each client's statistics (Fed-TGAN); anything else as it is."""
    if not train.info.get("encoding"):
        return train, held
    from fedgan.simulator.data.table import refit

    if client_rows is None:
        return refit(train, held, None, fit="pooled")[:2]
    return refit(train, held, client_rows)[:2]


@dataclass(frozen=True)
class CountGrouping:
    """An evaluation grouping besides the partition column whose per-group counts travel:
    its `group_by` name ("region", "sex|region"), every group in list order, and the
    position of each training point's group in that list (`codes` [n_train])."""

    name: str
    groups: list[Any]
    codes: np.ndarray


@dataclass(frozen=True)
class FederatedData:
    """The pooled split and each client's share.

    `train`/`held`: pooled training and held-out sets (the server evaluates on `held`);
    `client_train[c]`/`client_held[c]`: row indices into `train` for client c;
    `group_col`/`groups`: the group column and every group value, in the fixed order of the
    per-group count lists that clients send; `others`: every other grouping of
    `evaluation.group_by` (columns, intersections), whose counts travel in the `local.other_*`
    lists, concatenated in this order (none when the partition column is the only grouping).
    """

    train: Dataset
    held: Dataset
    partition: Partition
    client_train: list[np.ndarray]
    client_held: list[np.ndarray]
    group_col: str
    groups: list[Any]
    others: tuple[CountGrouping, ...] = field(default=())

    @property
    def n_clients(self) -> int:
        return len(self.client_train)

    def counts(
        self, idx: np.ndarray, weights: np.ndarray | None = None
    ) -> tuple[list[int], list[int]]:
        """Per-group sums of `weights` [len(idx)] (default: 1, i.e. points) over points `idx`
        of `train`: (over `groups`, over every grouping of `others` concatenated)."""

        def count(codes: np.ndarray, n: int) -> list[int]:
            return np.bincount(codes, weights=weights, minlength=n).astype(int).tolist()

        first = count(self.group_codes(idx), len(self.groups))
        rest = [v for o in self.others for v in count(o.codes[idx], len(o.groups))]
        return first, rest

    def group_codes(self, idx: np.ndarray) -> np.ndarray:
        """Position of each point's group in `groups`, for points `idx` of `train`."""
        return self._codes[idx]

    @functools.cached_property
    def _codes(self) -> np.ndarray:
        values = self.train.groups[self.group_col].to_numpy()
        lookup = {g: i for i, g in enumerate(self.groups)}
        return np.array([lookup[v] for v in values], dtype=np.int64)


@functools.lru_cache(maxsize=8)
def _federated_data(scenario_json: str) -> FederatedData:
    s = Scenario.model_validate_json(scenario_json)
    # The loader's split: a federated table is refitted from its clients' rows below, once.
    train, held = _split(_data_key(s))
    col = s.partition.group_by or train.groups.columns[0]
    if col not in train.groups.columns:
        raise ValueError(
            f"partition.group_by {col!r} is not a group column; the dataset has "
            f"{list(train.groups.columns)}"
        )
    part = partition(
        train.groups[col],
        s.partition.n_clients,
        derive_seed(s.seed, "partition"),
        s.partition.name,
        s.partition.params,
    )
    rng = numpy_rng(s.seed, "client-holdout")
    client_train, client_held = [], []
    for idx in part.indices:
        idx = rng.permutation(idx)
        n_held = int(round(s.partition.client_holdout * len(idx)))
        if s.partition.client_holdout > 0 and len(idx) >= 2:
            n_held = min(max(n_held, 1), len(idx) - 1)
        client_held.append(np.sort(idx[:n_held]))
        client_train.append(np.sort(idx[n_held:]))
    # A table's encoding: Fed-TGAN's, from each client's statistics of its own training rows
    # merged at the server (their bytes in info["encoding_bytes"]); `encoding: pooled` keeps
    # the oracle fit on the pooled training rows.
    federated = train.info.get("encoding_fit", "federated") == "federated"
    train, held = _refit(train, held, client_train if federated else None)
    groups = sorted(pd.unique(train.groups[col]).tolist(), key=group_sort_key)
    others = []
    for grouping in s.evaluation.group_by or [str(c) for c in train.groups.columns]:
        name = grouping_name(grouping)
        if name == col:
            continue
        labels = group_labels(train.groups, grouping).to_numpy()
        values = sorted(pd.unique(labels).tolist(), key=group_sort_key)
        lookup = {g: i for i, g in enumerate(values)}
        codes = np.array([lookup[v] for v in labels], dtype=np.int64)
        others.append(CountGrouping(name, values, codes))
    return FederatedData(train, held, part, client_train, client_held, col, groups, tuple(others))


def mixture_holdout(data: FederatedData, pi: np.ndarray, seed: int) -> tuple[Dataset, np.ndarray]:
    """The π-mixture Σ_k π_k p_k of the clients' distributions as a held-out set, and its group
    weights m [G] (over `data.groups`).

    Clients are split by group, so within a group every client's points come from the same
    distribution and the mixture is a reweighting of groups: m_g = Σ_k π_k s_kg, s_kg the share
    of client k's training points in group g. The set is the largest subsample of the pooled
    held-out set with those group proportions (the first points of one fixed, seeded
    permutation per group, so mixtures of nearby π share their points); a mixture dataset's
    mode weights become m (when its groups are its modes), so mode mass ratios are measured
    against the mixture. pi [N]: weights over all clients (normalised here).
    """
    G = len(data.groups)
    w = np.asarray(pi, dtype=np.float64)
    w = w / w.sum()
    shares = np.stack(
        [
            np.bincount(data.group_codes(ix), minlength=G) / max(len(ix), 1)
            for ix in data.client_train
        ]
    )
    mass = w @ shares
    mass = mass / mass.sum()
    held_codes = _held_codes(data)
    counts = np.bincount(held_codes, minlength=G)
    size = min(len(held_codes), int(min(counts[g] / mass[g] for g in range(G) if mass[g] > 0)))
    rng = numpy_rng(seed, "mixture")
    take = []
    for g in range(G):
        members = rng.permutation(np.flatnonzero(held_codes == g))
        take.append(members[: min(int(round(size * mass[g])), len(members))])
    out = data.held.subset(np.sort(np.concatenate(take)))
    modes = out.modes
    first = data.held.groups.columns[0]
    if modes is not None and data.group_col == first and data.groups == list(range(modes.n_modes)):
        out = replace(out, modes=Modes(modes.means, modes.sigma, mass))
    return out, mass


def _held_codes(data: FederatedData) -> np.ndarray:
    """Position in `data.groups` of each pooled held-out point's group."""
    lookup = {g: i for i, g in enumerate(data.groups)}
    return np.array([lookup[v] for v in data.held.groups[data.group_col]], dtype=np.int64)


def federated_data(s: Scenario) -> FederatedData:
    """The scenario's pooled split and partition (cached per scenario in this process)."""
    return _federated_data(s.to_json())


@functools.lru_cache(maxsize=8)
def _gan(
    scenario_json: str,
    data_dim: int,
    image_shape: tuple[int, int, int] | None,
    prox_mu: float,
    output_spans: tuple[tuple[int, int, str, float], ...] = (),
) -> GAN:
    from fedgan.simulator.gan.train import GAN  # torch: for a run, not for `validate`

    s = Scenario.model_validate_json(scenario_json)
    config = replace(s.gan.config(prox_mu=prox_mu, ema=client_ema(s)), dp=dp_sgd(s))
    return GAN(config, data_dim, image_shape, output_spans, condition_of(s))


def condition_of(s: Scenario) -> Condition | None:
    """The condition of `gan.conditional` on the scenario's training split (cached; None when
    off) — the one every GAN of the run (the clients', the server's) is built with."""
    if s.gan.conditional is None:
        return None
    return _condition(s.to_json())


@functools.lru_cache(maxsize=8)
def _condition(scenario_json: str) -> Condition:
    from fedgan.simulator.gan.conditional import build_condition

    s = Scenario.model_validate_json(scenario_json)
    c = s.gan.conditional
    assert c is not None
    return build_condition(c.column, c.sampling, prepare_data(s)[0])


def conditional_problems(s: Scenario, train: Dataset) -> list[str]:
    """What `gan.conditional` cannot be combined with, as 'path: message' lines: a column
    that is not a group column of the data, privacy (the per-category counts the samplers need
    are client statistics: refused, not accounted), a protocol that draws no conditions,
    networks other than MLPs."""
    c = s.gan.conditional
    if c is None:
        return []
    out = []
    cols = [str(x) for x in train.groups.columns]
    if c.column != "all" and c.column not in cols:
        out.append(
            f"gan.conditional.column: {c.column!r} is not a group column of the data; allowed: "
            f"{', '.join(cols + ['all'])}"
        )
    if s.privacy is not None:
        out.append(
            "gan.conditional: training-by-sampling needs every client's per-category row "
            "counts (the global frequencies the samplers renormalize, π_j(c) of the server-held "
            "protocols): client statistics no privacy budget accounts — not allowed with privacy"
        )
    if s.federation is not None and s.federation.protocol not in ("fedavg", "mdgan", "uagan"):
        out.append(
            f"gan.conditional: protocol {s.federation.protocol!r} draws no conditions "
            "(fedavg, mdgan and uagan do)"
        )
    for net in ("generator", "critic"):
        kind = getattr(s.gan, net).kind
        if kind != "mlp":
            out.append(
                f"gan.conditional: needs MLP networks (the generator sees [z, c], the critic "
                f"[x, c]); gan.{net}.kind is {kind!r}"
            )
    return out


def dp_sgd(s: Scenario) -> DPSGD | None:
    """The critic's DP-SGD of a `privacy.level: sample` scenario — its clip, its σ (given, or
    calibrated to `target_epsilon` over the run: `simulator.privacy.budget`) and its batch
    sampling —, None otherwise."""
    p = s.privacy
    if p is None or p.level != "sample":
        return None
    from fedgan.simulator.gan.state import DPSGD
    from fedgan.simulator.privacy import budget

    return DPSGD(p.clip, budget.noise_multiplier(s, train_sizes(s)), p.sampling)


def client_ema(s: Scenario) -> float:
    """Decay of the generator EMA a client keeps. Only a private generator (`federate:
    critic`) has a trajectory of its own to average; a federated generator restarts from the
    aggregate every round, so its EMA is kept on the server, over the aggregated generators
    (`ServerEMA`)."""
    if s.federation is None or not generator_travels(s.federation.federate):
        return s.gan.ema
    return 0.0


def data_problems(s: Scenario) -> list[str]:
    """The scenario's data at full size — the dataset (digits weights that need more images
    than exist, say), the held-out split and, federated, the partition — as 'path: message'
    problems (empty: fine). Built once: the run reuses the cached result."""
    from fedgan.simulator.data import DataError
    from fedgan.simulator.gan.kinds import image_problem
    from fedgan.simulator.partition import PartitionError

    try:
        train = federated_data(s).train if s.federated else prepare_data(s)[0]
    except PartitionError as exc:
        return [f"partition: {exc}"]
    except (DataError, ValueError) as exc:
        return [f"data: {exc}"]
    # A built-in image network on data it cannot take (dcgan on 8×8 digits): said here, with
    # its path, not when the run builds the network.
    problems = conditional_problems(s, train)
    for net in ("generator", "critic"):
        spec = getattr(s.gan, net)
        why = image_problem(spec.kind, spec.widths, train.image_shape)
        if why:
            problems.append(f"gan.{net}.kind: {why}")
    if s.evaluation.features is not None:  # loads torch: only for a scenario that names one
        problems += feature_problems(s)
    return problems


def make_gan(s: Scenario, data: FederatedData | None = None, prox_mu: float | None = None) -> GAN:
    """The scenario's GAN template (cached); `prox_mu` (FedProx's μ, sent by the strategy)
    overrides `federation.proximal_mu`."""
    d = data or federated_data(s)
    if prox_mu is None:
        prox_mu = s.federation.proximal_mu if s.federation else 0.0
    spans = output_spans(d.train.info)  # a mixed table's softmax heads (none otherwise)
    return _gan(s.to_json(), d.train.X.shape[1], d.train.image_shape, prox_mu, spans)


def local_steps(s: Scenario, data: FederatedData, client: int) -> int:
    """Generator steps client `client` runs each round: `federation.local_steps`, or with
    `federation.local_epochs`, enough batches for that many passes over its training points."""
    return steps_for(s, len(data.client_train[client]))


def train_sizes(s: Scenario) -> tuple[int, ...]:
    """Training points of each client (centralized: of the one training set), as the run
    builds them (cached) — what sample-level privacy accounts (`simulator.privacy.budget`);
    () at user level, where the accountant needs none."""
    if s.privacy is not None and s.privacy.level == "user":
        return ()
    if s.federation is None:
        return (len(prepare_data(s)[0].X),)
    return tuple(len(ix) for ix in federated_data(s).client_train)


def initial_state(s: Scenario, gan: GAN) -> GANState:
    """The round-0 state: every client and the server start from the same draw.

    Drawn once per GAN template and seed: re-initializing the modules costs more than a small
    client's whole local training. The copy shares the (never mutated) tensors, not the dicts.
    """
    from fedgan.simulator.gan import batched

    st = _initial_state(gan, derive_seed(s.seed, "init"))
    return replace(st, **{k: dict(getattr(st, k)) for k in batched.STATE_GROUPS})  # type: ignore[arg-type]


@functools.lru_cache(maxsize=8)
def _initial_state(gan: GAN, seed: int) -> GANState:
    return gan.init_state(seed)


@dataclass(frozen=True)
class PooledReference:
    """The pooled held-out set as the clients' coverage scores use it: its points in the space
    PRDC runs in (`held` [N, d]) and the map into that space (None: data space)."""

    held: np.ndarray
    features: Callable[[np.ndarray], np.ndarray] | None

    def embed(self, x: np.ndarray) -> np.ndarray:
        return self.features(x) if self.features is not None else x


@functools.lru_cache(maxsize=8)
def _pooled_reference(scenario_json: str) -> PooledReference:
    data = _federated_data(scenario_json)
    s = Scenario.model_validate_json(scenario_json)
    features = scenario_feature_space(s, data.held, data.train).embed
    held = features(data.held.X) if features is not None else data.held.X
    return PooledReference(np.asarray(held, dtype=np.float64), features)


def critic_state(s: Scenario, gan: GAN | None = None) -> dict[str, np.ndarray]:
    """A client's critic and its optimizer state before its first step (the round-0 draw every
    client starts from, as under fedavg)."""
    return select(initial_state(s, gan or make_gan(s)).arrays(), CRITIC_STATE)


def pooled_reference(s: Scenario) -> PooledReference:
    """The scenario's pooled held-out set in the space PRDC runs in (cached per scenario)."""
    return _pooled_reference(s.to_json())


def scenario_feature_space(
    s: Scenario, held: Dataset, train: Dataset | None = None
) -> FeatureSpace:
    """The feature space of the scenario's evaluations against `held`: a classifier trained
    on `train` (default: the scenario's training split, `prepare.prepare_data`; only loaded
    for image data that need it) or `evaluation.features`; the digit classifier for 8×8
    digits, data space for other data."""
    from fedgan.simulator.metrics.features import feature_space  # torch: only when evaluating

    if train is None and held.image_shape is not None and held.image_shape[1:] != (8, 8):
        train = prepare_data(s)[0]
    return feature_space(held, train, s.evaluation.features)


def feature_problems(s: Scenario) -> list[str]:
    """`evaluation.features` loaded and run on two held-out images, as the run will at its
    start (a preflight check: 'evaluation.features: ...' lines); [] when unset or fine, or
    when the data cannot be built (the data check says why)."""
    if s.evaluation.features is None:
        return []
    from fedgan.simulator.metrics.features import check_features

    try:
        held = prepare_data(s)[1]
    except Exception:  # noqa: BLE001 - reported by the data check
        return []
    return check_features(s.evaluation.features, held)
