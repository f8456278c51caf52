"""How a dataset's training points are split across N federated clients (non-IID), seeded.

A *partitioner* is a callable

    partitioner(groups: pd.Series, n_clients: int, rng: np.random.Generator, **params)
        -> list[np.ndarray]

that returns one sorted int64 index array per client: disjoint, each index in [0, n), and
together covering every index unless the partitioner documents otherwise. `PARTITIONERS`
holds the built-ins (`iid`, `dirichlet`, `shards`, `quantity_skew`, `explicit`) and accepts
`module:attr` / `file.py:attr` plug-ins; `partition(...)` checks the parameters, calls one,
validates its result and returns a `Partition` with the client × group counts table.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from fedgan.simulator.registry import Registry, RegistryError, Signature, signature

__all__ = [
    "PARTITIONERS",
    "Partition",
    "PartitionError",
    "Partitioner",
    "partition",
    "partition_params",
]


class PartitionError(ValueError):
    """A bad partitioner parameter, an impossible request, or an invalid partition."""


# Callable[..., ...] rather than a Protocol with **params: partitioners have concrete keyword
# parameters (alpha, min_size, ...), which a `**params: Any` protocol would reject.
Partitioner = Callable[..., list[np.ndarray]]

_N_POSITIONAL = 3  # (groups, n_clients, rng)


def _check_partitioner(obj: object) -> str | None:
    if not callable(obj):
        return f"expected a callable (groups, n_clients, rng, **params) -> list, got {obj!r}"
    return None


PARTITIONERS: Registry[Partitioner] = Registry("partitioner", check=_check_partitioner)


# eq=False: the generated __eq__ would compare arrays with `==` and fail on truth-testing.
@dataclass(frozen=True, eq=False)
class Partition:
    """Which training points each client holds.

    Attributes
    ----------
    indices : list of N int64 arrays
        Client c's row positions into the dataset, sorted and read-only.
    counts : DataFrame [N, G]
        Points of each group per client: clients 0..N−1 as rows (index "client"), every group
        as a column (zeros included), columns in sorted group order where sortable.
    """

    indices: list[np.ndarray]
    counts: pd.DataFrame

    @property
    def n_clients(self) -> int:
        """N, the number of clients."""
        return len(self.indices)

    @property
    def sizes(self) -> np.ndarray:
        """int64 [N], points per client."""
        return np.array([len(ix) for ix in self.indices], dtype=np.int64)

    def tidy(self) -> pd.DataFrame:
        """The counts table in long form: columns client, group, n; N·G rows, zeros included."""
        n_clients, n_groups = self.counts.shape
        return pd.DataFrame(
            {
                "client": np.repeat(np.arange(n_clients, dtype=np.int64), n_groups),
                "group": np.tile(self.counts.columns.to_numpy(), n_clients),
                "n": self.counts.to_numpy(dtype=np.int64).ravel(),
            }
        )


# ----------------------------------------------------------------------------------------------
# Helpers. Values may come from YAML/JSON, so accept integral floats for ints but never bools
# (True would silently mean 1).


def _int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise PartitionError(f"{name} must be an integer, got {value!r}")
    if isinstance(value, float | np.floating) and not float(value).is_integer():
        raise PartitionError(f"{name} must be an integer, got {value!r}")
    out = int(value)
    if out < minimum:
        raise PartitionError(f"{name} must be >= {minimum}, got {value!r}")
    return out


def _positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise PartitionError(f"{name} must be a number, got {value!r}")
    out = float(value)
    if not (math.isfinite(out) and out > 0):
        raise PartitionError(f"{name} must be finite and > 0, got {value!r}")
    return out


def _factorize(groups: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """Group codes int64 [n] in 0..G−1 and the G group values (sorted where sortable)."""
    try:
        codes, uniques = pd.factorize(groups, sort=True)
    except TypeError:  # mixed, unorderable labels (e.g. 1 and "a"): keep first-seen order
        codes, uniques = pd.factorize(groups, sort=False)
    return np.asarray(codes, dtype=np.int64), pd.Index(uniques)


def _allocate(n: int, p: np.ndarray) -> np.ndarray:
    """Split n items by proportions p [K] (sum 1) with largest-remainder rounding → int64 [K].

    Unlike truncating cumsum(p)·n (FedLab), this never biases the last client.
    """
    raw = n * p
    counts = np.floor(raw).astype(np.int64)
    short = n - int(counts.sum())
    if short > 0:
        counts[np.argsort(-(raw - counts), kind="stable")[:short]] += 1
    return counts


def _split(idx: np.ndarray, counts: np.ndarray) -> list[np.ndarray]:
    """Consecutive pieces of idx [m] with the given sizes (int [K], summing to m)."""
    return np.split(idx, np.cumsum(counts)[:-1])


def _deal(
    idx_by_group: Sequence[np.ndarray], clients: np.ndarray, rng: np.random.Generator
) -> dict[int, list[np.ndarray]]:
    """Stratified dealing of the given groups' points over `clients`, at random.

    Each group's points are shuffled and dealt round-robin, continuing where the previous group
    stopped from a random starting client: every client's total differs by ≤ 1 and so does its
    share of every group (random IID placement would only do this in expectation).
    """
    out: dict[int, list[np.ndarray]] = {int(c): [] for c in clients}
    order = rng.permutation(clients)
    pos = 0
    for idx in idx_by_group:
        shuffled = rng.permutation(idx)
        slots = (pos + np.arange(len(shuffled))) % len(order)
        for k, c in enumerate(order):
            out[int(c)].append(shuffled[slots == k])
        pos += len(shuffled)
    return out


def _finish(pieces: Sequence[Sequence[np.ndarray]]) -> list[np.ndarray]:
    """Concatenate each client's pieces into one sorted int64 array."""
    return [
        np.sort(np.concatenate(list(p))).astype(np.int64) if p else np.empty(0, np.int64)
        for p in pieces
    ]


def _group_indices(codes: np.ndarray, n_groups: int) -> list[np.ndarray]:
    """Row positions of each group, int64 [n_g] each."""
    order = np.argsort(codes, kind="stable")
    return np.split(order, np.cumsum(np.bincount(codes, minlength=n_groups))[:-1])


# ----------------------------------------------------------------------------------------------
# Built-in partitioners.


@PARTITIONERS.register("iid")
def iid(groups: pd.Series, n_clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A seeded random permutation cut into N near-equal parts (sizes differ by ≤ 1)."""
    parts = np.array_split(rng.permutation(len(groups)), n_clients)
    return [np.sort(p).astype(np.int64) for p in parts]


@PARTITIONERS.register("dirichlet")
def dirichlet(
    groups: pd.Series,
    n_clients: int,
    rng: np.random.Generator,
    alpha: float,
    min_size: int = 1,
    max_retries: int = 100,
) -> list[np.ndarray]:
    """Label skew: each group's points split over clients by proportions ~ Dir(α·1_N).

    The Hsu et al. 2019 / Yurochkin et al. 2019 protocol (FedLab, Flower Datasets'
    DirichletPartitioner). Small α (0.05) puts each group on few clients; large α (100) is
    near IID. The whole draw is repeated until every client has ≥ `min_size` points, at most
    `max_retries` times.
    """
    a = _positive("alpha", alpha)
    need = _int("min_size", min_size, minimum=0)
    tries = _int("max_retries", max_retries, minimum=1)
    n = len(groups)
    if need * n_clients > n:
        raise PartitionError(
            f"min_size={need} is impossible: {n_clients} clients × {need} > {n} points"
        )
    codes, uniques = _factorize(groups)
    by_group = _group_indices(codes, len(uniques))
    smallest = 0
    for _ in range(tries):
        pieces: list[list[np.ndarray]] = [[] for _ in range(n_clients)]
        for idx in by_group:
            p = rng.dirichlet(np.full(n_clients, a))
            for c, part in enumerate(_split(rng.permutation(idx), _allocate(len(idx), p))):
                pieces[c].append(part)
        out = _finish(pieces)
        smallest = min(len(ix) for ix in out)
        if smallest >= need:
            return out
    raise PartitionError(
        f"after max_retries={tries} draws some client still had fewer than min_size={need} "
        f"points (smallest: {smallest}); use a larger alpha (now {a}), fewer clients "
        f"(now {n_clients}), a smaller min_size or more max_retries"
    )


@PARTITIONERS.register("shards")
def shards(
    groups: pd.Series, n_clients: int, rng: np.random.Generator, shards_per_client: int = 2
) -> list[np.ndarray]:
    """McMahan et al. 2017 pathological non-IID: sort by group, cut N·s shards, deal s each.

    Shards are near-equal (sizes differ by ≤ 1, so every point is kept); when every group's
    size is a multiple of the shard size each client holds at most `shards_per_client` groups.
    """
    s = _int("shards_per_client", shards_per_client, minimum=1)
    n = len(groups)
    n_shards = n_clients * s
    if n_shards > n:
        raise PartitionError(
            f"shards_per_client={s} needs {n_clients} × {s} = {n_shards} shards but there are "
            f"only {n} points; use fewer shards or clients"
        )
    codes, _ = _factorize(groups)
    # Shuffle first so that a shard is a random subset of its group, not the file's order.
    perm = rng.permutation(n)
    order = perm[np.argsort(codes[perm], kind="stable")]
    cut = np.array_split(order, n_shards)
    owned = rng.permutation(n_shards).reshape(n_clients, s)
    return _finish([[cut[k] for k in row] for row in owned])


@PARTITIONERS.register("quantity_skew")
def quantity_skew(
    groups: pd.Series,
    n_clients: int,
    rng: np.random.Generator,
    alpha: float,
    min_size: int = 1,
) -> list[np.ndarray]:
    """Size skew: client sizes min_size + Dir(α·1_N) share of the rest; groups IID inside.

    Giving every client `min_size` first and splitting only the remainder by the Dirichlet
    draw never needs the retries of NIID-Bench's rejection loop and cannot fail once
    N·min_size ≤ n.
    """
    a = _positive("alpha", alpha)
    need = _int("min_size", min_size, minimum=0)
    n = len(groups)
    if need * n_clients > n:
        raise PartitionError(
            f"min_size={need} is impossible: {n_clients} clients × {need} > {n} points"
        )
    sizes = need + _allocate(n - need * n_clients, rng.dirichlet(np.full(n_clients, a)))
    return [np.sort(p).astype(np.int64) for p in _split(rng.permutation(n), sizes)]


def _client_ids(group: object, value: object, n_clients: int) -> np.ndarray:
    items = [value] if isinstance(value, int | np.integer | float) else value
    if isinstance(items, str | bytes | Mapping) or not isinstance(items, Sequence | np.ndarray):
        raise PartitionError(f"assign[{group!r}] must be a list of client ids, got {value!r}")
    ids: list[int] = []
    for c in items:
        try:
            ids.append(_int(f"assign[{group!r}] client id", c, minimum=0))
        except PartitionError as exc:
            raise PartitionError(f"{exc} (client ids are 0..{n_clients - 1})") from None
        if ids[-1] >= n_clients:
            raise PartitionError(
                f"assign[{group!r}]: client id {c!r} is out of range; "
                f"client ids are 0..{n_clients - 1}"
            )
    if not ids:
        raise PartitionError(f"assign[{group!r}] lists no clients")
    return np.unique(np.array(ids, dtype=np.int64))


@PARTITIONERS.register("explicit")
def explicit(
    groups: pd.Series,
    n_clients: int,
    rng: np.random.Generator,
    assign: Mapping[Any, Sequence[int] | int],
    rest: str = "iid",
    alpha: float = 1.0,
    min_size: int = 1,
    max_retries: int = 100,
) -> list[np.ndarray]:
    """Named groups only on the listed clients; the other groups IID over the rest.

    `assign` maps a group value (matched by str(), since YAML keys may be ints or strings)
    to client ids (a list, or one id); that group's points are dealt at random and equally
    over those clients. The remaining groups are dealt stratified over all clients
    (rest="iid") or over the clients named nowhere in `assign` (rest="others"), or each split
    over all clients by Dirichlet(`alpha`) proportions (rest="dirichlet": a label skew for
    everything else; redrawn until every client holds ≥ `min_size` points, at most
    `max_retries` times). E.g. assign={0: [0], 1: [0]} keeps minority modes 0 and 1 on client 0.
    """
    if not isinstance(assign, Mapping):
        raise PartitionError(f"assign must be a mapping group → client ids, got {assign!r}")
    if rest not in ("iid", "others", "dirichlet"):
        raise PartitionError(f"rest must be 'iid', 'others' or 'dirichlet', got {rest!r}")
    if rest == "dirichlet":
        _positive("alpha", alpha)
    codes, uniques = _factorize(groups)
    by_name = {str(v): g for g, v in enumerate(uniques)}
    if len(by_name) != len(uniques):
        raise PartitionError(
            f"group values {list(uniques)} are not distinct as strings, so assign keys are "
            "ambiguous"
        )
    chosen: dict[int, np.ndarray] = {}
    for key, value in assign.items():
        g = by_name.get(str(key))
        if g is None:
            raise PartitionError(
                f"assign names group {key!r}, which is not in the data; groups: "
                f"{', '.join(map(str, uniques))}"
            )
        if g in chosen:
            raise PartitionError(f"assign names group {key!r} twice")
        chosen[g] = _client_ids(key, value, n_clients)
    by_group = _group_indices(codes, len(uniques))
    pieces: list[list[np.ndarray]] = [[] for _ in range(n_clients)]
    for g, clients in chosen.items():
        for c, parts in _deal([by_group[g]], clients, rng).items():
            pieces[c].extend(parts)
    named = set().union(*(set(c.tolist()) for c in chosen.values())) if chosen else set()
    others = np.array([c for c in range(n_clients) if c not in named], dtype=np.int64)
    targets = np.arange(n_clients, dtype=np.int64) if rest == "iid" else others
    remaining = [by_group[g] for g in range(len(uniques)) if g not in chosen]
    if remaining and sum(len(ix) for ix in remaining) and len(targets) == 0:
        raise PartitionError(
            "rest='others' but every client is named in assign, so the remaining groups "
            f"({', '.join(str(uniques[g]) for g in range(len(uniques)) if g not in chosen)}) "
            "have nowhere to go; use rest='iid' or more clients"
        )
    if remaining and rest == "dirichlet":
        min_size = _int("min_size", min_size, 0)
        pinned = np.array([sum(len(p) for p in ps) for ps in pieces])
        for _ in range(_int("max_retries", max_retries, 1)):
            draw = [
                _split(
                    rng.permutation(idx),
                    _allocate(len(idx), rng.dirichlet(np.full(n_clients, float(alpha)))),
                )
                for idx in remaining
            ]
            sizes = pinned + np.array([sum(len(d[c]) for d in draw) for c in range(n_clients)])
            if sizes.min() >= min_size:
                break
        else:
            raise PartitionError(
                f"no Dirichlet(alpha={alpha}) draw gave every client ≥ {min_size} points in "
                f"{max_retries} tries; raise alpha, lower min_size or use fewer clients"
            )
        for d in draw:
            for c, part in enumerate(d):
                pieces[c].append(part)
    elif remaining:
        for c, parts in _deal(remaining, targets, rng).items():
            pieces[c].extend(parts)
    return _finish(pieces)


# ----------------------------------------------------------------------------------------------
# Parameter checking, the call, and validation of the result.


def _signature(name: str, fn: Partitioner) -> Signature:
    try:
        return signature("partitioner", name, fn, skip=_N_POSITIONAL)
    except RegistryError as exc:
        raise PartitionError(str(exc)) from exc


def partition_params(name: str) -> dict[str, Any]:
    """The parameters of partitioner `name` and their defaults (`inspect.Parameter.empty`
    for a required one)."""
    return _signature(name, PARTITIONERS.get(name)).defaults()


def param_problems(name: str, params: Mapping[str, Any]) -> list[str]:
    """Problems with partitioner `name`'s `params` as 'partition.params.<key>: message' lines
    (unknown names, missing required ones); [] when they fit its signature."""
    try:
        sig = _signature(name, PARTITIONERS.get(name))
    except (PartitionError, RegistryError) as exc:
        return [f"partition.name: {exc}"]
    return sig.check(params).by_key("partition.params", f"partitioner {name!r}")


def _check_params(name: str, sig: Signature, params: Mapping[str, Any]) -> None:
    if len(sig.positional) < _N_POSITIONAL and not sig.var_positional:
        raise PartitionError(
            f"partitioner {name!r} must accept (groups, n_clients, rng) positionally"
        )
    for r in sig.positional:
        if r in params:
            raise PartitionError(
                f"partitioner {name!r}: {r!r} is passed by partition(), not in params"
            )
    problems = sig.check(params).problems("partitioner", name)
    if problems:
        raise PartitionError(problems[0])


def _validate(
    name: str, result: object, n: int, n_clients: int, allow_empty: bool, params: Mapping[str, Any]
) -> list[np.ndarray]:
    """Sorted read-only int64 copies of the client arrays, or PartitionError saying why."""
    where = f"partitioner {name!r}"
    if not isinstance(result, Sequence | np.ndarray) or isinstance(result, str | bytes):
        raise PartitionError(f"{where} returned {type(result).__name__}, not a list of arrays")
    if len(result) != n_clients:
        raise PartitionError(f"{where} returned {len(result)} clients, expected {n_clients}")
    out: list[np.ndarray] = []
    for c, ix in enumerate(result):
        a = np.asarray(ix)
        if a.size == 0:
            a = a.astype(np.int64)
        if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
            raise PartitionError(
                f"{where}: client {c}'s indices must be a 1-D integer array, "
                f"got dtype {a.dtype} and shape {a.shape}"
            )
        if a.size and (a.min() < 0 or a.max() >= n):
            bad = a[(a < 0) | (a >= n)][0]
            raise PartitionError(f"{where}: client {c} has index {bad} outside [0, {n})")
        a = np.sort(a).astype(np.int64)
        a.setflags(write=False)
        out.append(a)
    hits = np.bincount(np.concatenate(out), minlength=n) if n else np.zeros(0, np.int64)
    if hits.size and hits.max() > 1:
        dup = int(np.flatnonzero(hits > 1)[0])
        owners = [c for c, a in enumerate(out) if np.any(a == dup)]
        where_dup = f"clients {owners}" if len(owners) > 1 else f"client {owners[0]} (twice)"
        raise PartitionError(f"{where}: index {dup} is given to {where_dup}; must be disjoint")
    if not allow_empty:
        empty = [c for c, a in enumerate(out) if a.size == 0]
        if empty:
            knobs = ", ".join(f"{k}={v!r}" for k, v in params.items()) or "no params"
            raise PartitionError(
                f"{where} ({knobs}) left client(s) {empty} with no data; use a larger alpha, "
                f"fewer clients (now {n_clients}), min_size >= 1, or allow_empty=True"
            )
    return out


def _counts(out: Sequence[np.ndarray], groups: pd.Series) -> pd.DataFrame:
    codes, uniques = _factorize(groups)
    n_groups = len(uniques)
    table = np.zeros((len(out), n_groups), dtype=np.int64)
    for c, ix in enumerate(out):
        table[c] = np.bincount(codes[ix], minlength=n_groups)
    columns = uniques.copy()
    columns.name = groups.name if groups.name is not None else "group"
    return pd.DataFrame(table, index=pd.RangeIndex(len(out), name="client"), columns=columns)


def partition(
    groups: pd.Series | np.ndarray | Sequence[Any],
    n_clients: int,
    seed: int,
    name: str = "iid",
    params: Mapping[str, Any] | None = None,
    *,
    allow_empty: bool = False,
) -> Partition:
    """Split the n points with labels `groups` over `n_clients` clients with partitioner `name`.

    Parameters
    ----------
    groups : Series (or array-like), length n
        The chosen group column, e.g. `dataset.groups[col]`; ints or strings, no missing values.
    n_clients : int
        N >= 1.
    seed : int
        Seed >= 0. It is mixed with a "partition" tag, so passing the scenario seed that also
        seeded the dataset does not correlate the two streams.
    name : str
        Registered partitioner or a `module:attr` / `file.py:attr` plug-in.
    params : mapping, optional
        The partitioner's keyword parameters, checked against its signature first.
    allow_empty : bool
        Accept clients with no points (otherwise an error names them).

    Returns
    -------
    Partition
        `indices` (N sorted int64 arrays) and `counts` (client × group table).

    Raises
    ------
    RegistryError
        Unknown name (the message lists the allowed names) or a broken plug-in.
    PartitionError
        Unknown/missing parameter, a bad value, an impossible request, or an invalid result.
    """
    fn = PARTITIONERS.get(name)
    params = dict(params or {})
    n_c = _int("n_clients", n_clients, minimum=1)
    s = _int("seed", seed, minimum=0)
    if isinstance(groups, pd.DataFrame):
        raise PartitionError(
            f"groups must be one column (a Series), got a DataFrame with columns "
            f"{list(map(str, groups.columns))}; pick one, e.g. groups[{str(groups.columns[0])!r}]"
        )
    series = groups.reset_index(drop=True) if isinstance(groups, pd.Series) else pd.Series(groups)
    n_missing = int(series.isna().sum())
    if n_missing:
        raise PartitionError(f"groups has {n_missing} missing label(s); every point needs one")
    _check_params(name, _signature(name, fn), params)
    rng = np.random.default_rng(np.random.SeedSequence([s, zlib.crc32(b"partition")]))
    try:
        result = fn(series, n_c, rng, **params)
    except PartitionError as exc:
        msg = str(exc)
        # Partitioners' own messages rarely say which partitioner; avoid saying it twice.
        raise PartitionError(
            msg if msg.startswith("partitioner ") else f"partitioner {name!r}: {msg}"
        ) from exc
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        # Plug-in code raises whatever it likes; give it the partitioner's name, keep the cause.
        raise PartitionError(f"partitioner {name!r}: {type(exc).__name__}: {exc}") from exc
    out = _validate(name, result, len(series), n_c, allow_empty, params)
    return Partition(indices=out, counts=_counts(out, series))
