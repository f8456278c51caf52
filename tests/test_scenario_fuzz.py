"""Hostile input: random and mutated scenarios only ever give a Scenario or a ScenarioError
whose every error names a field path (or, for a parse error, file:line:column)."""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from typing import Any

import pytest
from fedgan.simulator.memory import (
    DATA_COPIES,
    estimate_memory_bytes,
    memory_breakdown,
    scenario_warnings,
)
from fedgan.simulator.scenario import (
    Scenario,
    ScenarioError,
    _read,
    load,
    validate,
)
from fedgan.simulator.yamlsafe import MAX_BYTES, MAX_DEPTH, MAX_NODES, YAMLError, load_yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SCENARIOS = sorted((Path(__file__).parent.parent / "scenarios").rglob("*.yaml"))
BUNDLED = [_read(p) for p in SCENARIOS]
# Deterministic, so that CI sees the same examples every run; no deadline (validation does
# a dry dataset build whose first call is slow).
FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
LINE_COL = re.compile(r":\d+:\d+: ")

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from([0, -1, 1, 2**31, 2**63, -(2**63), 10**9, 10**18]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -0.0, 5e-324]),
    st.text(max_size=30),
    st.sampled_from(["", "..", ".", "mlp", "conv", "adam", "ring", "x:y", "/dev/zero", "a\x00b"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside dicts and lists."""
    out = []
    items = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else ()
    )
    for k, v in items:
        out.append((*prefix, k))
        out.extend(_paths(v, (*prefix, k)))
    return out


def _at(root: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        root = root[p]
    return root


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    raw = copy.deepcopy(draw(st.sampled_from(BUNDLED)))
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(raw)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent, key = _at(raw, path[:-1]), path[-1]
        op = draw(st.sampled_from(["delete", "unknown", "replace", "wrap_list", "wrap_dict"]))
        if op == "delete" and isinstance(parent, dict):
            del parent[key]
        elif op == "unknown" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=10))] = draw(values)
        elif op == "wrap_list":
            parent[key] = [parent[key]]
        elif op == "wrap_dict":
            parent[key] = {draw(st.sampled_from(["name", "params", "x"])): parent[key]}
        else:
            parent[key] = draw(values)
    return raw


def _check_errors(exc: ScenarioError, raw: Any) -> None:
    assert exc.errors, "an error lists at least one problem"
    keys = [str(k) for k in raw] if isinstance(raw, dict) else []
    for e in exc.errors:
        named = e.startswith("(top)") or any(
            e.startswith(k + ".") or e.startswith(k + ":") for k in keys
        )
        assert named or LINE_COL.search(e), f"error names no field path: {e!r}"


def _outcome(raw: Any) -> None:
    try:
        assert isinstance(validate(raw, "<fuzz>"), Scenario)
    except ScenarioError as exc:
        _check_errors(exc, raw)


@FUZZ
@given(mutated())
def test_mutated_scenarios_validate_or_name_the_field(raw: dict[str, Any]) -> None:
    _outcome(raw)


@FUZZ
@given(mutated())
def test_mutated_scenarios_survive_a_yaml_round_trip(raw: dict[str, Any]) -> None:
    """The same mutations written as YAML text and loaded from a file."""
    import yaml

    try:
        text = yaml.safe_dump(raw, allow_unicode=True)
    except yaml.YAMLError:
        return  # not representable as YAML (e.g. a lone surrogate)
    _load_text(text)


def _load_text(text: str | bytes) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "s.yaml"
        f.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
        try:
            assert isinstance(load(f), Scenario)
        except ScenarioError as exc:
            try:
                raw = load_yaml(f.read_text(encoding="utf-8"))
            except (YAMLError, UnicodeDecodeError):
                raw = None
            _check_errors(exc, raw)


tokens = st.sampled_from(
    [
        "{",
        "}",
        "[",
        "]",
        ":",
        "- ",
        ",",
        "\n",
        "  ",
        "&a",
        "*a",
        "!!python/name:os.system",
        "?",
        "|",
        ">",
        "'",
        '"',
        "#",
        "name",
        "gan",
        "data",
        "base",
        "base: .",
        "base: /dev/zero",
        "2001-13-45",
        "!!binary",
        "!!set",
        "<<:",
        "~",
        ".nan",
        "1e999",
        "%YAML 1.1\n",
        "---",
        "...",
        "\t",
        "\x00",
        "\x85",
        "\ufeff",
        "é",
    ]
)


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=200), st.lists(tokens, max_size=40).map("".join), st.text(max_size=100)
    )
)
def test_random_text_parses_or_says_where(text: str | bytes) -> None:
    _load_text(text)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("a: " + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), f"deeper than {MAX_DEPTH}"),
        ("a:\n" + "".join(f"{'  ' * i}b{i}:\n" for i in range(MAX_DEPTH + 5)), "deeper"),
        ("[" * 100_000, "deeper"),
        ("a: [" + ", ".join(["1"] * (MAX_NODES + 1)) + "]", f"more than {MAX_NODES}"),
        ("date: 2001-13-45\n", "month"),
        ("a: \x00\n", "not allowed"),
    ],
)
def test_yaml_caps_name_line_and_column(text: str, needle: str) -> None:
    with pytest.raises(YAMLError, match=needle) as info:
        load_yaml(text, "f.yaml")
    assert re.search(r"f\.yaml:\d+:\d+: ", str(info.value))


def test_large_binary_and_special_files_are_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * MAX_BYTES + "\n")
    with pytest.raises(ScenarioError, match="MiB limit"):
        load(big)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"name: ok\ndescription: \xff\xfe\n")
    with pytest.raises(ScenarioError, match=r"bin\.yaml:2:14: not UTF-8"):
        load(binary)
    child = tmp_path / "child.yaml"
    for base in ("/dev/zero", ".", "a\\x00b"):  # the NUL written as a YAML escape
        child.write_text(f'base: "{base}"\n')
        with pytest.raises(ScenarioError) as info:
            load(child)
        assert all(e.startswith("base: ") for e in info.value.errors), info.value.errors


def test_bad_override_values_are_scenario_errors() -> None:
    with pytest.raises(ScenarioError, match=r"override gan\.x:1:\d+: "):
        load(SCENARIOS[0], ["gan.x=[1,"])


@pytest.mark.parametrize(
    "raw",
    [
        {"gan": {"g_opt": {"eps": math.inf}}},
        {"evaluation": {"mode_threshold": math.nan}},
        {"name": ".."},
        {"name": "x" * 200},
        {"gan": {"critic": {"widths": [1] * 65}}},
        {"federation": {"rounds": 1_000_000, "local_steps": 1_000}},
        {"data": {"params": {"n_modes": math.inf}}},
        {"data": {"params": {"n_modes": 10**9}}},  # was: the dry run filled the memory
        {"data": {"dataset": "grid", "params": {"n_per_side": 10**6}}},
    ],
)
def test_hostile_values_are_refused(raw: dict[str, Any]) -> None:
    with pytest.raises(ScenarioError) as info:
        validate(raw)
    _check_errors(info.value, raw)


def test_deep_python_structures_are_refused_without_recursion() -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(100_000):
        node["x"] = {}
        node = node["x"]
    with pytest.raises(ScenarioError, match="deeper than"):
        validate({"data": {"params": deep}})


def test_memory_estimate_matches_a_hand_computation() -> None:
    s = validate(
        {
            "data": {"dataset": "ring", "n_samples": 1000, "holdout": 0.2},
            "gan": {
                "latent_dim": 2,
                "generator": {"widths": [8]},
                "critic": {"widths": [4, 4]},
                "batch_size": 16,
                "g_opt": {"name": "adam"},
                "d_opt": {"name": "sgd", "momentum": 0.9},
            },
            "partition": {"n_clients": 4},
            "federation": {"federate": "generator", "clients_per_round": 2},
            "evaluation": {"n_samples": 100},
        }
    )
    g = (2 * 8 + 8) + (8 * 2 + 2)  # 2→8→2: 42
    c = (2 * 4 + 4) + (4 * 4 + 4) + (4 * 1 + 1)  # 2→4→4→1: 37
    g_opt, d_opt = 2 * g, 1 * c  # adam: m, v; sgd with momentum: m
    parts = memory_breakdown(s)
    assert parts["data"] == 1000 * 2 * 4 * DATA_COPIES
    assert parts["models"] == (2 * g + 2 * c + g_opt + d_opt) * 4
    assert parts["private"] == (c + g_opt + d_opt) * 4 * 4  # critic + moments, × 4 clients
    assert parts["replies"] == g * 2 * 4  # the generator from 2 sampled clients
    assert parts["activations"] == 16 * (8 + 8 + 2 + 2) * 4 * 4
    assert parts["evaluation"] == (100 + 200) * 2 * 8 + 8 * 2**20
    assert estimate_memory_bytes(s) == sum(parts.values())


def test_memory_warning_only_when_the_estimate_exceeds_what_is_available() -> None:
    s = validate(
        {"data": {"n_samples": 10_000_000, "dataset": "two_gaussians", "params": {"dim": 1000}}}
    )
    need = estimate_memory_bytes(s)
    assert need > 3 * 10**10
    assert scenario_warnings(s, available=need + 1) == []
    (warning,) = scenario_warnings(s, available=2**30)
    assert warning.startswith("(top): the run needs about") and "data" in warning
    assert scenario_warnings(validate({})) == [] or scenario_warnings(validate({}), 10**15) == []
