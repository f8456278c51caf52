"""The scenario schema: defaults, overrides, and every error reported at once with its path."""

from pathlib import Path

import pytest
from fedgan.simulator.scenario import (
    ScenarioError,
    _read,
    apply_overrides,
    load,
    resolved_yaml,
    validate,
)
from fedgan.simulator.yamlsafe import load_yaml

SCENARIOS = sorted((Path(__file__).parent.parent / "scenarios").rglob("*.yaml"))


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.name)
def test_every_bundled_scenario_validates(path: Path) -> None:
    s = load(path)
    assert s.name
    first = path.read_text().splitlines()[0]
    assert first.startswith("# Run: fedgan run "), "every bundled scenario opens with its command"


def test_empty_mapping_gets_every_default() -> None:
    s = validate({})
    assert s.data.dataset == "ring"
    assert s.gan.objective == "non_saturating"
    assert s.train.steps > 0


def test_resolved_yaml_round_trips() -> None:
    s = load(SCENARIOS[0])
    again = validate(load_yaml(resolved_yaml(s)))
    assert again == s


def test_overrides_set_nested_values_and_parse_yaml_scalars() -> None:
    raw = {"gan": {"batch_size": 8}}
    out = apply_overrides(raw, ["gan.batch_size=64", "train.steps=5", "gan.lipschitz.name=none"])
    assert out == {"gan": {"batch_size": 64, "lipschitz": {"name": "none"}}, "train": {"steps": 5}}
    assert raw == {"gan": {"batch_size": 8}}, "the input mapping is not modified"


def test_all_errors_reported_at_once_with_paths(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(
        "nme: x\n"
        "data: {dataset: rin}\n"
        "gan:\n"
        "  objective: foo\n"
        "  batch_size: -1\n"
        "  lipschitz: {name: weight_clip, params: {cc: 1}}\n"
    )
    with pytest.raises(ScenarioError) as info:
        load(f)
    errors = info.value.errors
    text = str(info.value)
    assert str(f) in text, "the message names the file"
    assert len(errors) == 5
    joined = "\n".join(errors)
    assert "nme: unknown key; allowed here: name" in joined
    line = next(e for e in errors if e.startswith("data.dataset:"))
    assert "unknown dataset 'rin'; allowed: " in line
    allowed = line.split("allowed: ", 1)[1].split(", or ")[0].split(", ")
    assert {"digits", "grid", "ring", "table"} <= set(allowed) and allowed == sorted(allowed)
    assert "gan.objective: unknown objective 'foo'; allowed:" in joined and "hinge" in joined
    assert "gan.batch_size" in joined and "-1" in joined
    assert "gan.lipschitz" in joined and "'cc'" in joined and "allowed: c" in joined


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("data.params.sigma=-0.5", "sigma"),
        ("data.params.weights=[0, 0, 0, 0, 0, 0, 0, 0]", "weights"),
        ("data.params.bogus=1", "bogus"),
        ("gan.lipschitz.params.lam=-1", "lam"),
        ("gan.g_opt.name=adamw", "adamw"),
        ("gan.lr_schedule=step", "step"),
        ("gan.critic.kind=resnet", "resnet"),
        ("evaluation.k=0", "evaluation.k"),
    ],
)
def test_bad_values_name_the_field(override: str, needle: str) -> None:
    with pytest.raises(ScenarioError) as info:
        load(SCENARIOS[0], [override])
    assert needle in str(info.value)


def test_yaml_aliases_and_python_tags_are_refused(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text('a: &a ["x","x"]\nb: &b [*a,*a]\nc: [*b,*b]\n')
    with pytest.raises(ScenarioError, match="aliases"):
        load(bomb)
    tag = tmp_path / "tag.yaml"
    tag.write_text("name: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ScenarioError, match=r"tag\.yaml:1:7"):
        load(tag)


def test_missing_file_is_a_scenario_error(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="cannot read"):
        load(tmp_path / "nope.yaml")


def test_base_files_merge_mapping_by_mapping(tmp_path: Path) -> None:
    (tmp_path / "parent.yaml").write_text(
        "name: parent\ndescription: the parent\ngan: {batch_size: 16, objective: hinge}\n"
        "train: {steps: 7}\n"
    )
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "child.yaml").write_text("base: ../parent.yaml\nname: child\ngan: {batch_size: 32}\n")
    s = load(sub / "child.yaml")
    assert (s.name, s.gan.batch_size, s.gan.objective, s.train.steps) == ("child", 32, "hinge", 7)
    assert s.description == "", "descriptions are not inherited"
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ScenarioError, match="includes itself"):
        load(tmp_path / "loop.yaml")


def test_a_renamed_component_starts_from_empty_params(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(
        "gan: {lipschitz: {name: gradient_penalty, params: {lam: 5.0}}}\n"
    )
    (tmp_path / "a.yaml").write_text("base: p.yaml\ngan: {lipschitz: {name: weight_clip}}\n")
    (tmp_path / "b.yaml").write_text("base: p.yaml\ngan: {lipschitz: {params: {sampling: real}}}\n")
    assert load(tmp_path / "a.yaml").gan.lipschitz.params == {}
    assert load(tmp_path / "b.yaml").gan.lipschitz.params == {"lam": 5.0, "sampling": "real"}


PARENT = """
data: {dataset: ring, n_samples: 400, params: {n_modes: 4, minority_modes: [0]}}
partition: {name: explicit, params: {assign: {0: [0]}, rest: iid}, n_clients: 4}
strategy: {name: fedadam, params: {eta: 0.01}}
federation: {rounds: 1, protocol: mdgan, protocol_params: {swap_every: 5}}
"""


@pytest.mark.parametrize(
    ("overrides", "where", "expected"),
    [
        # a changed name starts from empty params; the ones given beside it, in any order, stay
        (["partition.name=dirichlet", "partition.params.alpha=0.3"], "partition", {"alpha": 0.3}),
        (["partition.params.alpha=0.3", "partition.name=dirichlet"], "partition", {"alpha": 0.3}),
        (["partition.name=iid"], "partition", {}),
        (["strategy.name=fedyogi"], "strategy", {}),
        (["data.dataset=grid"], "data", {}),
        # the same name again is no change: its params stay
        (["strategy.name=fedadam"], "strategy", {"eta": 0.01}),
        (["strategy.params.tau=0.1"], "strategy", {"eta": 0.01, "tau": 0.1}),
    ],
)
def test_an_override_that_renames_a_component_starts_from_empty_params(
    tmp_path: Path, overrides: list[str], where: str, expected: dict[str, object]
) -> None:
    """The README's rule for `base:` files holds on the command line too (on main,
    `partition.name=dirichlet` kept explicit's `assign` and the scenario was refused)."""
    (tmp_path / "s.yaml").write_text(PARENT)
    raw = apply_overrides(_read(tmp_path / "s.yaml"), overrides)
    assert raw[where]["params"] == expected


def test_a_renamed_protocol_or_dataset_in_a_file_starts_from_empty_params(tmp_path: Path) -> None:
    """`data.dataset` and `federation.protocol` are names like any component's: over a base
    file as on the command line, the old one's parameters do not follow the new one."""
    (tmp_path / "p.yaml").write_text(PARENT)
    (tmp_path / "c.yaml").write_text(
        "base: p.yaml\ndata: {dataset: grid}\nfederation: {protocol: uagan}\n"
    )
    raw = _read(tmp_path / "c.yaml")
    assert raw["data"]["params"] == {} and raw["federation"]["protocol_params"] == {}
    over = apply_overrides(_read(tmp_path / "p.yaml"), ["federation.protocol=uagan"])
    assert over["federation"]["protocol_params"] == {}


def _table_scenario(folder: Path, path: str, **data: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    raw = {
        "name": "own",
        "data": {"dataset": "table", "params": {"path": path, "groups": ["sex", "region"]}, **data},
        "gan": {"generator": {"widths": [8]}, "critic": {"widths": [8]}, "batch_size": 16},
        "partition": {"n_clients": 2},
        "federation": {"rounds": 1, "local_steps": 1},
        "evaluation": {"every": 1, "n_samples": 50, "min_group_size": 5},
    }
    import yaml

    (folder / "s.yaml").write_text(yaml.safe_dump(raw))
    return folder / "s.yaml"


def test_finite_data_defaults_to_every_row(tmp_path: Path) -> None:
    """A 500-row table without n_samples is all 500 rows (main asked for 20,000 and refused
    it); generated data keeps its 20,000 points; the digits all their images."""
    from tests.conftest import write_table

    write_table(tmp_path / "t.csv")
    s = load(_table_scenario(tmp_path, "t.csv"))
    assert s.data.n_samples is None
    assert validate({}).data.n_samples == 20000
    assert validate({"data": {"dataset": "digits"}}).data.n_samples is None
    given = {"path": str(tmp_path / "t.csv"), "groups": ["sex", "region"]}
    table = {"dataset": "table", "n_samples": 100, "params": given}
    assert validate({"data": table}).data.n_samples == 100


def test_data_paths_resolve_against_the_file_that_names_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As `base:` does: a path in a file is taken from that file's folder (a base's from the
    base's), one on the command line from the current directory; all are stored absolute, so
    the run folder's scenario.yaml reads the same from anywhere."""
    from tests.conftest import write_table

    (tmp_path / "proj" / "data").mkdir(parents=True)
    write_table(tmp_path / "proj" / "data" / "t.csv")
    base = _table_scenario(tmp_path / "proj" / "data", "t.csv")  # proj/data/s.yaml: t.csv
    child = tmp_path / "proj" / "child.yaml"
    child.write_text("base: data/s.yaml\nname: child\n")
    other = tmp_path / "proj" / "other.yaml"
    other.write_text("base: data/s.yaml\ndata: {params: {path: data/t.csv}}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    want = str(tmp_path / "proj" / "data" / "t.csv")
    for f in (base, child, other):
        s = load(f)
        assert s.data.params["path"] == want, f
        assert f"path: {want}" in resolved_yaml(s)
    with pytest.raises(ScenarioError) as info:
        load(child, ["data.params.path=mine.csv"])
    tried = str(elsewhere / "mine.csv")
    assert any(tried in e and "file not found" in e for e in info.value.errors), info.value


def test_constants_kept_apart_from_torch_agree_with_their_sources() -> None:
    """The schema does not import the torch-side modules these come from: they must agree."""
    from typing import get_args

    from fedgan.simulator.gan.state import SCHEDULES
    from fedgan.simulator.memory import EVAL_BLOCK_BYTES
    from fedgan.simulator.metrics.neighbours import _BLOCK_BYTES
    from fedgan.simulator.scenario import GANModel

    assert get_args(GANModel.model_fields["lr_schedule"].annotation) == SCHEDULES
    assert EVAL_BLOCK_BYTES == _BLOCK_BYTES
