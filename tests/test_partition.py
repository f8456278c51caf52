"""Client partitioners: validity, reproducibility, their non-IID shape, and error messages."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fedgan.simulator.partition import (
    PARTITIONERS,
    Partition,
    PartitionError,
    partition,
    partition_params,
)
from fedgan.simulator.registry import RegistryError

N_CLIENTS = 10


def _groups(sizes: list[int], labels: list[Any] | None = None, seed: int = 0) -> pd.Series:
    """Group labels with the given group sizes, in shuffled order."""
    labels = list(range(len(sizes))) if labels is None else labels
    values = np.repeat(np.array(labels, dtype=object), sizes)
    rng = np.random.default_rng(seed)
    return pd.Series(values[rng.permutation(len(values))], name="mode")


EIGHT = _groups([1000] * 8)  # 8 groups of 1000 points, as in the brief's Dirichlet check

# Every built-in with parameters it can satisfy on EIGHT.
CASES: list[tuple[str, dict[str, Any]]] = [
    ("iid", {}),
    ("dirichlet", {"alpha": 0.5}),
    ("dirichlet", {"alpha": 0.05}),
    ("shards", {"shards_per_client": 2}),
    ("quantity_skew", {"alpha": 1.0, "min_size": 10}),
    ("explicit", {"assign": {0: [0], 1: [0]}}),
    ("explicit", {"assign": {"2": [1, 2], 5: 3}, "rest": "others"}),
]


def test_registered_names() -> None:
    assert PARTITIONERS.names() == ["dirichlet", "explicit", "iid", "quantity_skew", "shards"]
    assert issubclass(PartitionError, ValueError)
    assert partition_params("dirichlet") == {
        "alpha": inspect.Parameter.empty,
        "min_size": 1,
        "max_retries": 100,
    }


@pytest.mark.parametrize(("name", "params"), CASES)
def test_disjoint_complete_sorted_and_reproducible(name: str, params: dict[str, Any]) -> None:
    p = partition(EIGHT, N_CLIENTS, seed=3, name=name, params=params)
    assert isinstance(p, Partition) and p.n_clients == N_CLIENTS
    allidx = np.concatenate(p.indices)
    assert np.array_equal(np.sort(allidx), np.arange(len(EIGHT)))  # disjoint and complete
    for ix in p.indices:
        assert ix.dtype == np.int64 and ix.size > 0
        assert np.all(np.diff(ix) > 0)
    again = partition(EIGHT, N_CLIENTS, seed=3, name=name, params=params)
    assert all(np.array_equal(a, b) for a, b in zip(p.indices, again.indices, strict=True))
    other = partition(EIGHT, N_CLIENTS, seed=4, name=name, params=params)
    assert not all(np.array_equal(a, b) for a, b in zip(p.indices, other.indices, strict=True))


def test_iid_sizes_differ_by_at_most_one() -> None:
    g = _groups([337, 1000, 5])  # n = 1342, not a multiple of 10
    p = partition(g, N_CLIENTS, seed=0)
    assert p.sizes.max() - p.sizes.min() <= 1 and p.sizes.sum() == 1342


def _top_share(p: Partition) -> float:
    """Mean over groups of the share of a group's points held by its largest client."""
    c = p.counts.to_numpy()
    return float((c.max(axis=0) / c.sum(axis=0)).mean())


def test_dirichlet_concentration_depends_on_alpha() -> None:
    # Bounds, from 10^5 simulated Dir(α·1_10) draws: the largest client's share of a group has
    # mean ≈ 0.78 (sd 0.19) at α = 0.05 and ≈ 0.116 (sd 0.005) at α = 100. Averaged over 8
    # groups the sds shrink to ≈ 0.065 and 0.002, so > 0.5 and < 0.15 are each > 4 sd away
    # (a bound of 0.8 would fail for about half of all seeds).
    small = partition(EIGHT, N_CLIENTS, seed=1, name="dirichlet", params={"alpha": 0.05})
    large = partition(EIGHT, N_CLIENTS, seed=1, name="dirichlet", params={"alpha": 100})
    assert _top_share(small) > 0.5
    assert _top_share(large) < 0.15
    # Near IID: every client holds ≈ 100 of each group.
    assert large.counts.to_numpy().min() > 50


def test_dirichlet_min_size_retries_and_gives_up() -> None:
    # At α = 1 a client below 300 of a fair 800 is common, so min_size = 300 forces redraws;
    # 790 at α = 0.05 is practically never met.
    p = partition(
        EIGHT,
        N_CLIENTS,
        seed=0,
        name="dirichlet",
        params={"alpha": 1.0, "min_size": 300, "max_retries": 1000},
    )
    assert p.sizes.min() >= 300
    with pytest.raises(PartitionError, match=r"min_size=790.*larger alpha"):
        partition(
            EIGHT,
            N_CLIENTS,
            seed=0,
            name="dirichlet",
            params={"alpha": 0.05, "min_size": 790, "max_retries": 3},
        )


def test_shards_give_each_client_at_most_s_groups() -> None:
    # 10 clients × 2 shards = 20 shards of 2000/20 = 100 points; every group size is a multiple
    # of 100, so no shard straddles two groups and a client sees ≤ 2 groups.
    g = _groups([300, 200, 500, 100, 400, 200, 200, 100])
    p = partition(g, N_CLIENTS, seed=5, name="shards", params={"shards_per_client": 2})
    assert (p.sizes == 200).all()
    assert ((p.counts > 0).sum(axis=1) <= 2).all()
    assert set(np.unique(p.counts.to_numpy())) <= {0, 100, 200}


def test_quantity_skew_sizes_vary_but_groups_mix() -> None:
    p = partition(
        EIGHT, N_CLIENTS, seed=2, name="quantity_skew", params={"alpha": 0.5, "min_size": 50}
    )
    assert p.sizes.min() >= 50 and p.sizes.max() > 2 * p.sizes.min()
    # Groups IID within the largest client: each group ≈ 1/8 of it.
    big = p.counts.iloc[int(p.sizes.argmax())].to_numpy()
    assert np.all(np.abs(big / big.sum() - 1 / 8) < 0.05)


def test_explicit_minority_on_client_zero_only() -> None:
    p = partition(EIGHT, N_CLIENTS, seed=0, name="explicit", params={"assign": {0: [0], "1": [0]}})
    c = p.counts
    assert c.loc[0, 0] == 1000 and c.loc[0, 1] == 1000
    assert (c.loc[1:, [0, 1]] == 0).all().all()
    rest = c[[2, 3, 4, 5, 6, 7]].to_numpy()
    assert rest.min() > 0 and rest.max() - rest.min() <= 1  # stratified: 100 each


def test_explicit_rest_others_and_string_labels() -> None:
    g = _groups([400, 400, 400], labels=["a", "b", "c"])
    p = partition(g, 4, seed=0, name="explicit", params={"assign": {"a": [0, 1]}, "rest": "others"})
    c = p.counts
    assert list(c.loc[[0, 1], "a"]) == [200, 200] and (c.loc[[0, 1], ["b", "c"]] == 0).all().all()
    assert (c.loc[[2, 3], "a"] == 0).all() and (c.loc[[2, 3], ["b", "c"]] == 200).all().all()


def test_counts_table_matches_a_groupby() -> None:
    g = _groups([30, 0, 70, 5], labels=[3, 1, 2, 9])  # label 1 has no points → not a column
    p = partition(
        g, 4, seed=0, name="dirichlet", params={"alpha": 0.1, "min_size": 0}, allow_empty=True
    )
    client = np.empty(len(g), dtype=np.int64)
    for c, ix in enumerate(p.indices):
        client[ix] = c
    by_hand = (
        pd.DataFrame({"client": client, "mode": g})
        .groupby(["client", "mode"])
        .size()
        .unstack(fill_value=0)
        .reindex(index=range(4), fill_value=0)
    )
    assert list(p.counts.columns) == [2, 3, 9] and p.counts.index.name == "client"
    assert np.array_equal(p.counts.to_numpy(), by_hand[[2, 3, 9]].to_numpy())
    tidy = p.tidy()
    assert list(tidy.columns) == ["client", "group", "n"] and len(tidy) == 4 * 3
    assert (
        tidy.set_index(["client", "group"])["n"]
        .unstack()
        .equals(p.counts.rename_axis(columns="group"))
    )


# ----------------------------------------------------------------------------------------------
# Bad inputs: each error names the offending value.


def test_unknown_partitioner_lists_allowed_names() -> None:
    with pytest.raises(RegistryError) as exc:
        partition(EIGHT, 4, 0, name="dirichlett")
    msg = str(exc.value)
    assert "'dirichlett'" in msg
    for name in PARTITIONERS.names():
        assert name in msg


def test_unknown_and_missing_parameters() -> None:
    with pytest.raises(PartitionError) as exc:
        partition(EIGHT, 4, 0, name="dirichlet", params={"alpha": 1, "beta": 2})
    assert "'beta'" in str(exc.value) and "allowed: alpha, min_size, max_retries" in str(exc.value)
    with pytest.raises(PartitionError, match="missing required parameter.*'alpha'"):
        partition(EIGHT, 4, 0, name="dirichlet")


@pytest.mark.parametrize("alpha", [0, -1.0, float("nan"), "x", True])
@pytest.mark.parametrize("name", ["dirichlet", "quantity_skew"])
def test_alpha_must_be_positive(name: str, alpha: object) -> None:
    shown = str(alpha).lower() if isinstance(alpha, bool) else repr(alpha)  # YAML's `true`
    with pytest.raises(PartitionError, match=rf"partitioner '{name}': alpha .*{shown}"):
        partition(EIGHT, 4, 0, name=name, params={"alpha": alpha})


def test_explicit_bad_client_and_group() -> None:
    with pytest.raises(PartitionError, match=r"client id 10 is out of range.*0\.\.9"):
        partition(EIGHT, 10, 0, name="explicit", params={"assign": {0: [0, 10]}})
    with pytest.raises(PartitionError, match=r"group 'zz'.*groups: 0, 1, 2, 3, 4, 5, 6, 7"):
        partition(EIGHT, 10, 0, name="explicit", params={"assign": {"zz": [0]}})
    with pytest.raises(
        PartitionError, match="rest must be 'iid', 'others' or 'dirichlet', got 'all'"
    ):
        partition(EIGHT, 10, 0, name="explicit", params={"assign": {0: [0]}, "rest": "all"})
    with pytest.raises(PartitionError, match="every client is named"):
        partition(
            EIGHT, 2, 0, name="explicit", params={"assign": {0: [0], 1: [1]}, "rest": "others"}
        )


def test_impossible_requests() -> None:
    with pytest.raises(PartitionError, match=r"min_size=801 is impossible"):
        partition(EIGHT, 10, 0, name="dirichlet", params={"alpha": 1, "min_size": 801})
    with pytest.raises(PartitionError, match=r"min_size=900 is impossible"):
        partition(EIGHT, 10, 0, name="quantity_skew", params={"alpha": 1, "min_size": 900})
    with pytest.raises(PartitionError, match=r"shards_per_client=1000 .* 10000 shards"):
        partition(EIGHT, 10, 0, name="shards", params={"shards_per_client": 1000})
    with pytest.raises(PartitionError, match="n_clients must be >= 1, got 0"):
        partition(EIGHT, 0, 0)


def test_empty_client_is_reported_unless_allowed() -> None:
    g = _groups([3, 3])
    with pytest.raises(PartitionError, match=r"client\(s\) \[6, 7\] with no data.*larger alpha"):
        partition(g, 8, 0)
    p = partition(g, 8, 0, allow_empty=True)
    assert p.sizes.tolist() == [1] * 6 + [0, 0]


def test_plugin_results_are_validated(tmp_path: Path) -> None:
    f = tmp_path / "plug.py"
    f.write_text(
        "import numpy as np\n"
        "def overlap(groups, n_clients, rng):\n"
        "    return [np.arange(len(groups))] * n_clients\n"
        "def half(groups, n_clients, rng, *, k=1):\n"
        "    return [np.arange(c, len(groups) // 2, n_clients) for c in range(n_clients)]\n"
    )
    with pytest.raises(PartitionError, match="index 0 is given to clients \\[0, 1\\]"):
        partition(EIGHT, 2, 0, name=f"{f}:overlap")
    # A plug-in may leave points out; it is checked, not completed.
    p = partition(EIGHT, 2, 0, name=f"{f}:half", params={"k": 2})
    assert p.sizes.sum() == len(EIGHT) // 2


def test_explicit_with_a_dirichlet_rest() -> None:
    """Minority groups pinned to two clients, every other group label-skewed by Dirichlet."""
    groups = pd.Series(np.repeat(np.arange(8), [40, 40] + [400] * 6))
    part = partition(
        groups,
        20,
        0,
        "explicit",
        {"assign": {0: [3, 7], 1: [3, 7]}, "rest": "dirichlet", "alpha": 0.1},
        allow_empty=True,
    )
    counts = part.counts
    assert set(np.flatnonzero(counts[0].to_numpy() > 0)) == {3, 7}
    assert set(np.flatnonzero(counts[1].to_numpy() > 0)) == {3, 7}
    assert counts.to_numpy().sum() == len(groups)
    # α = 0.1 over 20 clients: each majority group's largest client holds a big share.
    top = [counts[g].max() / 400 for g in range(2, 8)]
    assert np.mean(top) > 0.3
    with pytest.raises(PartitionError, match="alpha"):
        partition(groups, 20, 0, "explicit", {"assign": {0: [1]}, "rest": "dirichlet", "alpha": 0})
