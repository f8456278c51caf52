"""Mixed-type table encoding: round trips, the 1/√2 one-hots, federated = pooled where it must
be, the bytes a federated fit sends, CTGAN's mode-specific normalizer, and the loader."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fedgan.simulator.data import DataError
from fedgan.simulator.data import encoding as enc
from fedgan.simulator.data.base import Dataset
from fedgan.simulator.data.table import refit, table

H = 1 / math.sqrt(2)


def _people(n: int = 300, seed: int = 0) -> pd.DataFrame:
    """Every kind of column: str, bool, integer codes, a bounded integer, a float."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "city": rng.choice(["Oslo", "Lima", "Pune", "Kyiv"], n, p=[0.5, 0.3, 0.15, 0.05]),
            "smoker": rng.random(n) < 0.3,
            "code": rng.choice([3, 7, 11], n),
            "age": rng.integers(18, 91, n),
            "wage": rng.lognormal(10, 0.5, n),
        }
    )


def _plans(df: pd.DataFrame, **kw: object) -> list[enc.ColumnPlan]:
    return enc.plan_columns(df, list(df.columns), categorical=["code"], **kw)  # type: ignore[arg-type]


def test_plan_detects_kinds_and_dtypes() -> None:
    got = [(p.name, p.kind, p.dtype) for p in _plans(_people())]
    assert got == [
        ("city", "categorical", "str"),
        ("smoker", "categorical", "bool"),
        ("code", "categorical", "int"),
        ("age", "continuous", "int"),
        ("wage", "continuous", "float"),
    ]


def test_real_rows_round_trip_exactly() -> None:
    df = _people()
    e = enc.fit_pooled(df, _plans(df))
    X = enc.encode(e, df)
    assert X.dtype == np.float32 and X.shape == (300, 4 + 2 + 3 + 1 + 1) and e["dim"] == 11
    back = enc.decode(e, X)
    assert list(back.columns) == list(df.columns)
    for c in ("city", "smoker", "code", "age"):
        assert back[c].tolist() == df[c].tolist()
    np.testing.assert_allclose(back["wage"], df["wage"], rtol=1e-6)


def test_generated_rows_decode_to_the_users_columns_dtypes_categories_and_ranges() -> None:
    import torch
    from fedgan.simulator.gan.heads import apply_heads

    df = _people()
    plans = _plans(df, bounds={"age": [18, 90], "wage": [0, None]})
    e = enc.fit_pooled(df, plans)
    # What a generator emits: arbitrary raw outputs through the heads, numbers far outside
    # the data (so bounds must act).
    raw = torch.randn(500, e["dim"], generator=torch.Generator().manual_seed(0)) * 5
    x = apply_heads(raw, enc.output_spans({"encoding": e})).numpy()
    out = enc.decode(e, x)
    assert list(out.columns) == ["city", "smoker", "code", "age", "wage"]
    assert out["city"].map(type).eq(str).all() and set(out["city"]) <= {
        "Oslo",
        "Lima",
        "Pune",
        "Kyiv",
    }
    assert out["smoker"].dtype == bool
    assert out["code"].dtype == np.int64 and set(out["code"]) <= {3, 7, 11}
    assert out["age"].dtype == np.int64 and out["age"].between(18, 90).all()
    assert out["age"].min() == 18 and out["age"].max() == 90, "the bounds clip these outputs"
    assert out["wage"].dtype == np.float64 and (out["wage"] >= 0).all()
    # Through a CSV and back, as a user reads it.
    csv = pd.read_csv(pd.io.common.StringIO(out.to_csv(index=False)))
    assert csv["age"].dtype == np.int64 and csv["smoker"].dtype == bool


def test_one_category_apart_is_distance_one() -> None:
    df = pd.DataFrame({"g": ["a", "b", "a"], "x": [0.0, 0.0, 1.0]})
    e = enc.fit_pooled(df, enc.plan_columns(df, ["g", "x"]))
    X = enc.encode(e, df)
    assert np.linalg.norm(X[0] - X[1]) == pytest.approx(1.0)
    # x: mean 1/3, population std √2/3 → (0 − 1/3) / (√2/3) = −1/√2
    assert X[0, 2] == pytest.approx(-1 / math.sqrt(2))
    np.testing.assert_allclose(X[:, :2], [[H, 0], [0, H], [H, 0]])


def test_federated_fit_equals_pooled_for_disjoint_clients_by_hand() -> None:
    df = pd.DataFrame({"g": ["a", "a", "b", "b", "c"], "x": [1.0, 2.0, 3.0, 4.0, 5.0]})
    plans = enc.plan_columns(df, ["g", "x"], continuous="standard")
    fed, n_bytes = enc.fit_federated(df, [np.array([0, 1, 2]), np.array([3, 4])], plans)
    pooled = enc.fit_pooled(df, plans)
    g_f, x_f = fed["columns"]
    assert g_f["categories"] == ["a", "b", "c"] and g_f["frequencies"] == [0.4, 0.4, 0.2]
    assert x_f["mean"] == pytest.approx(3.0) and x_f["std"] == pytest.approx(math.sqrt(2.0))
    g_p, x_p = pooled["columns"]
    assert g_p["categories"] == g_f["categories"] and g_p["frequencies"] == g_f["frequencies"]
    assert (x_p["mean"], x_p["std"]) == pytest.approx((x_f["mean"], x_f["std"]), rel=1e-12)
    assert fed["fit"] == "federated" and pooled["fit"] == "pooled"
    # Client A: "a", "b" (1 byte each + an 8-byte count) = 18, moments 24; client B: "b",
    # "c" = 18, moments 24.
    assert n_bytes == 18 + 24 + 18 + 24


def test_bytes_count_observed_bounds_and_mixture_components() -> None:
    df = pd.DataFrame({"name": ["Åsa", "Bo"], "x": [1.0, 2.0]})
    plans = enc.plan_columns(df, ["name", "x"], bounds="observed")
    stats = [enc.client_stats(df.iloc[[0]], plans), enc.client_stats(df.iloc[[1]], plans)]
    # "Åsa" is 4 UTF-8 bytes; each client also sends n, mean, M2, min, max (40 bytes).
    assert enc.stats_bytes(stats, plans) == (4 + 8) + 40 + (2 + 8) + 40
    ms = enc.plan_columns(df, ["x"], continuous="mode_specific")
    st = enc.client_stats(df, ms)
    assert enc.stats_bytes([st], ms) == 24 + 24 * len(st["x"].modes)


def test_observed_bounds_are_the_clients_extremes() -> None:
    df = pd.DataFrame({"x": [5.0, -2.0, 9.0, 1.0]})
    plans = enc.plan_columns(df, ["x"], bounds="observed")
    fed, _ = enc.fit_federated(df, [np.array([0, 1]), np.array([2, 3])], plans)
    assert fed["columns"][0]["bounds"] == [-2.0, 9.0]
    out = enc.decode(fed, np.array([[100.0], [-100.0]], dtype=np.float32))
    assert out["x"].tolist() == [9.0, -2.0]


def _bimodal(n: int = 1000) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    v = np.concatenate([rng.normal(-5, 0.5, n // 2), rng.normal(20, 2.0, n - n // 2)])
    return pd.DataFrame({"v": v})


def test_mode_specific_round_trip_and_layout() -> None:
    df = _bimodal()
    plans = enc.plan_columns(df, ["v"], continuous="mode_specific")
    e = enc.fit_pooled(df, plans)
    (c,) = e["columns"]
    k = len(c["means"])
    assert c["kind"] == "mode_specific" and e["dim"] == 1 + k and k >= 2
    # Both true modes are found (a component within 1 of each centre).
    assert min(abs(m + 5) for m in c["means"]) < 1 and min(abs(m - 20) for m in c["means"]) < 1
    X = enc.encode(e, df)
    assert np.all(np.abs(X[:, 0]) <= 0.99) and np.all(X[:, 1:].sum(1) == 1.0)
    back = enc.decode(e, X)["v"].to_numpy()
    # Rows inside ±3.96σ of their mode (α unclipped) come back to float32 precision.
    inside = np.abs(X[:, 0]) < 0.99
    assert inside.mean() > 0.99
    np.testing.assert_allclose(back[inside], df["v"].to_numpy()[inside], rtol=1e-5, atol=1e-4)
    # The PRDC space is the standardized value: (v − mean) / std of the data.
    z = enc.prdc_space(e, X)[:, 0]
    v = df["v"].to_numpy()
    np.testing.assert_allclose(z[inside], ((v - v.mean()) / v.std())[inside], atol=1e-4)


def test_federated_mixture_merges_the_clients_modes() -> None:
    df = _bimodal()
    plans = enc.plan_columns(df, ["v"], continuous="mode_specific")
    # One mode a client; the server pools the clients' components by rows: half the weight
    # near each true centre (a VGM may split one Gaussian into several components).
    fed, _ = enc.fit_federated(df, [np.arange(500), np.arange(500, 1000)], plans)
    (c,) = fed["columns"]
    m, w = np.asarray(c["means"]), np.asarray(c["weights"])
    assert np.all((np.abs(m + 5) < 1.5) | (np.abs(m - 20) < 4))
    assert w[m < 7].sum() == pytest.approx(0.5, abs=0.01) and w.sum() == pytest.approx(1.0)
    # Capped at one mode: each client sends one component (24 bytes) beside its moments (24),
    # and the server merges the two by moments into the pooled mean and std.
    one, n_bytes = enc.fit_federated(df, [np.arange(500), np.arange(500, 1000)], plans, max_modes=1)
    assert n_bytes == 2 * (24 + 24)
    (c1,) = one["columns"]
    v = df["v"].to_numpy()
    assert c1["means"][0] == pytest.approx(v.mean(), rel=1e-6)
    assert c1["stds"][0] == pytest.approx(v.std(), rel=1e-6)


def test_category_of_harden_and_unknown_categories() -> None:
    df = pd.DataFrame({"g": ["x", "y", "z"], "n": [1.0, 2.0, 3.0]})
    e = enc.fit_pooled(df, enc.plan_columns(df, ["g", "n"]))
    soft = np.array([[0.1, 0.5, 0.1, 0.3], [0.6, 0.05, 0.05, -1.0]], dtype=np.float32)
    assert enc.category_of(e, soft, "g").tolist() == ["y", "x"]
    np.testing.assert_allclose(enc.harden(e, soft), [[0, H, 0, 0.3], [H, 0, 0, -1.0]], atol=1e-7)
    # Standard encoding: the PRDC space is X itself, hardened.
    np.testing.assert_allclose(enc.prdc_space(e, soft), enc.harden(e, soft), atol=1e-6)
    unseen = enc.encode(e, pd.DataFrame({"g": ["w"], "n": [2.0]}))
    np.testing.assert_allclose(unseen, [[0, 0, 0, 0]], atol=1e-7)
    with pytest.raises(DataError, match="'n' is continuous"):
        enc.category_of(e, soft, "n")
    with pytest.raises(DataError, match="no generated column 'q'"):
        enc.category_of(e, soft, "q")


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"continuous": "robust"}, "continuous must be one of"),
        ({"bounds": "minmax"}, "bounds must be a mapping or 'observed'"),
        ({"bounds": {"q": [0, 1]}}, "bounds names 'q'"),
        ({"bounds": {"n": [3, 1]}}, "lo > hi"),
        ({"bounds": {"g": [0, 1]}}, "categorical column 'g'"),
        ({"categorical": ["q"]}, "categorical names column"),
    ],
)
def test_bad_plans_name_the_file(kw: dict[str, object], match: str) -> None:
    df = pd.DataFrame({"g": ["x", "y"], "n": [1.0, 2.0]})
    with pytest.raises(DataError, match=match) as exc:
        enc.plan_columns(df, ["g", "n"], where="table 'f.csv'", **kw)  # type: ignore[arg-type]
    assert "f.csv" in str(exc.value)


def test_missing_category_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    pd.DataFrame({"g": ["x", None, "y"], "n": [1.0, 2.0, 3.0], "s": [0, 1, 1]}).to_csv(
        path, index=False
    )
    with pytest.raises(DataError, match="'g' has 1 rows with missing values") as exc:
        table(path=str(path), groups="s")
    assert "t.csv" in str(exc.value)


def _write_people(tmp_path: Path) -> str:
    path = tmp_path / "people.csv"
    _people(400).to_csv(path, index=False)
    return str(path)


def test_loader_generates_a_group_column_too_and_describes_the_spans(tmp_path: Path) -> None:
    path = _write_people(tmp_path)
    ds = table(path=path, groups=["city"], features=["city", "age", "wage"], bounds="observed")
    e = ds.info["encoding"]
    assert [(c["name"], c["kind"], c["start"], c["end"]) for c in e["columns"]] == [
        ("city", "categorical", 0, 4),
        ("age", "continuous", 4, 5),
        ("wage", "continuous", 5, 6),
    ]
    # The generated value and the group label agree on real rows.
    assert enc.category_of(e, ds.X, "city").tolist() == ds.labels("city").astype(str).tolist()
    # Standardized by default in a mixed table (population std).
    df = pd.read_csv(path)
    assert e["columns"][1]["mean"] == pytest.approx(df["age"].mean())
    assert e["columns"][1]["std"] == pytest.approx(df["age"].std(ddof=0))
    import json

    assert json.loads(json.dumps(e)) == e, "JSON-ready"
    assert enc.output_spans(ds.info) == ((0, 4, "softmax", pytest.approx(H)),)


def test_an_all_numeric_table_keeps_raw_numbers_and_has_no_heads(tmp_path: Path) -> None:
    path = tmp_path / "n.csv"
    pd.DataFrame({"a": [1.0, 2.0], "b": [3, 4], "s": [0, 1]}).to_csv(path, index=False)
    ds = table(path=str(path), groups="s")
    np.testing.assert_array_equal(ds.X, [[1, 3], [2, 4]])
    assert enc.output_spans(ds.info) == ()


def test_refit_federated_and_pooled(tmp_path: Path) -> None:
    path = _write_people(tmp_path)
    cols = ["city", "smoker", "code", "age", "wage"]
    ds = table(path=path, groups=["city"], features=cols, categorical=["code"])
    train, held = ds.subset(np.arange(300)), ds.subset(np.arange(300, 400))
    rows = [np.arange(0, 150), np.arange(150, 300)]
    ftr, fho, n_bytes = refit(train, held, rows)
    ptr, pho, zero = refit(train, held, rows, fit="pooled")
    assert ftr.info["encoding"]["fit"] == "federated" and zero == 0 and n_bytes > 0
    assert ftr.info["encoding_bytes"] == fho.info["encoding_bytes"] == n_bytes
    df = pd.read_csv(path).iloc[:300]
    wage = ftr.info["encoding"]["columns"][-1]
    assert wage["mean"] == pytest.approx(df["wage"].mean(), rel=1e-6)
    # Disjoint clients: the same numbers as the pooled fit over the training rows.
    np.testing.assert_allclose(ftr.X, ptr.X, atol=1e-5)
    np.testing.assert_allclose(fho.X, pho.X, atol=1e-5)
    # Decoded held-out rows are the file's.
    assert (
        enc.decode(fho.info["encoding"], fho.X)["city"].tolist()
        == pd.read_csv(path)["city"].iloc[300:].tolist()
    )
    plain = Dataset("ring", np.zeros((3, 2)), pd.DataFrame({"m": [0, 1, 2]}))
    assert refit(plain, plain, rows)[2] == 0


def test_loader_parameters_are_checked(tmp_path: Path) -> None:
    path = _write_people(tmp_path)
    with pytest.raises(DataError, match="encoding must be one of"):
        table(path=path, groups="city", encoding="central")
    with pytest.raises(DataError, match="not both"):
        table(path=path, groups="city", standardize=True, continuous="standard")


@pytest.mark.parametrize("n_rows", [1, 2, 57])
def test_tables_of_other_shapes_round_trip(tmp_path: Path, n_rows: int) -> None:
    # One category only, a constant number, a single row: nothing divides by zero.
    df = pd.DataFrame(
        {"only": ["k"] * n_rows, "const": [4.0] * n_rows, "i": list(range(n_rows)), "s": 1}
    )
    path = tmp_path / "o.parquet"
    df.to_parquet(path)
    for cont in ("standard", "mode_specific"):
        ds = table(path=str(path), groups="s", features=["only", "const", "i"], continuous=cont)
        back = enc.decode(ds.info["encoding"], ds.X)
        assert back["only"].tolist() == ["k"] * n_rows
        np.testing.assert_allclose(back["const"], 4.0, rtol=1e-6)
        assert back["i"].tolist() == list(range(n_rows))


def test_generated_groups_label_rows_as_the_group_columns_do(tmp_path: Path) -> None:
    from fedgan.simulator.grouping import group_labels

    path = tmp_path / "g.csv"
    pd.DataFrame(
        {"sex": ["F", "M", "F", "M"], "flag": [True, False, False, True], "x": [1.0, 2, 3, 4]}
    ).to_csv(path, index=False)
    ds = table(path=str(path), groups=["sex", "flag"], features=["sex", "flag", "x"])
    gen = enc.generated_groups(ds.info["encoding"], ds.X)
    assert list(gen.columns) == ["sex", "flag"]
    # On real rows the generated value is the row's own group, labelled the same way.
    assert gen["sex"].tolist() == ds.labels("sex").astype(str).tolist()
    assert gen["flag"].tolist() == ds.labels("flag").tolist() == [1, 0, 0, 1]
    both = group_labels(gen, ["sex", "flag"])
    assert both.tolist() == ["F|1", "M|0", "F|0", "M|1"]


def test_a_64_bit_run_seed_fits_a_mixture(tmp_path: Path) -> None:
    # Runs derive 64-bit data seeds; sklearn's random_state takes 32 bits.
    path = tmp_path / "b.csv"
    _bimodal(200).assign(s=0).to_csv(path, index=False)
    ds = table(None, 2**63 - 7, path=str(path), groups="s", continuous="mode_specific")
    assert ds.info["encoding"]["columns"][0]["kind"] == "mode_specific"
