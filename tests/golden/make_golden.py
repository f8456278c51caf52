"""Record the golden metrics tables: small versions of every bundled scenario (and a few variants
that reach code paths no bundled scenario does), each stored fully resolved beside its table.

Run once, from the commit a refactor starts from (`python -m tests.golden.make_golden`); the
golden test (`test_golden.py`) then reruns the stored scenarios — not the scenario files, which
move on — and asks for the very same tables.
"""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
SCENARIOS = HERE / "scenarios"
TABLES = HERE / "tables"

FEDERATED = [
    "federation.rounds=2",
    "federation.local_steps=2",
    "evaluation.every=2",  # round 1 only trains; round 2 trains, evaluates and checkpoints
    "evaluation.n_samples=300",
    "data.n_samples=2000",
]
CENTRALIZED = [
    "train.steps=40",
    "evaluation.every=20",
    "evaluation.n_samples=300",
    "data.n_samples=2000",
]

CASES: dict[str, tuple[str, list[str]]] = {
    # Every bundled scenario, small.
    "quickstart": ("quickstart.yaml", FEDERATED),
    "quickstart-iid": ("quickstart-iid.yaml", FEDERATED),
    "quickstart-local-critic": ("quickstart-local-critic.yaml", FEDERATED),
    "faults": ("faults.yaml", FEDERATED),
    "digits": ("digits.yaml", [*FEDERATED[:-1], "data.n_samples=null"]),
    "deployment": ("deployment.yaml", [*FEDERATED, "engine={name: inprocess}"]),
    "ring-centralized": ("ring-centralized.yaml", CENTRALIZED),
    "fairness-minority-2of20": (
        "fairness/minority-2of20.yaml",
        [*FEDERATED[:-1], "data.n_samples=6000"],
    ),
    "minority-fedavg": ("minority/fedavg.yaml", FEDERATED),
    "minority-generator-only": ("minority/generator-only.yaml", FEDERATED),
    "minority-iid": ("minority/iid.yaml", FEDERATED),
    "methods-hinge-sn": ("methods/hinge-sn.yaml", FEDERATED),
    "methods-non-saturating": ("methods/non-saturating.yaml", FEDERATED),
    "methods-r1": ("methods/r1.yaml", FEDERATED),
    "methods-wgan-clip": ("methods/wgan-clip.yaml", FEDERATED),
    "methods-wgan-gp": ("methods/wgan-gp.yaml", FEDERATED),
    "findings-federation": ("findings/federation.yaml", FEDERATED),
    "findings-imbalanced-ring": ("findings/imbalanced-ring.yaml", CENTRALIZED),
    "findings-protocol-grid": ("findings/protocol-grid.yaml", CENTRALIZED),
    "findings-protocol-ring": ("findings/protocol-ring.yaml", CENTRALIZED),
    "scale-ring-100-clients": (
        "scale/ring-100-clients.yaml",
        [*FEDERATED[:-1], "data.n_samples=6000", "partition.n_clients=30"],
    ),
    "protocols-recommended": ("protocols/recommended.yaml", FEDERATED),
    # Variants: paths of the loop no bundled scenario takes.
    "v-ema": ("quickstart.yaml", [*FEDERATED, "gan.ema=0.9"]),
    "v-private-generator-ema": (
        "quickstart.yaml",
        [*FEDERATED, "federation.federate=critic", "gan.ema=0.9"],
    ),
    "v-local-epochs": ("quickstart.yaml", [*FEDERATED, "federation.local_epochs=0.2"]),
    "v-fedprox": (
        "quickstart.yaml",
        [*FEDERATED, "strategy={name: fedprox, params: {proximal_mu: 0.1}}"],
    ),
    "v-critic-strategy": (
        "quickstart.yaml",
        [*FEDERATED, "strategy={name: fedadam, critic: {name: fedmedian}}"],
    ),
    "v-critic-swap": ("quickstart.yaml", [*FEDERATED, "strategy={name: critic_swap}"]),
    "v-group-aware": (
        "quickstart.yaml",
        [*FEDERATED, "strategy={name: group_aware, params: {beta: 2.0, metric: coverage}}"],
    ),
    "v-agnostic": ("quickstart.yaml", [*FEDERATED, "strategy={name: agnostic}"]),
    "v-faults-bounds": (
        "faults.yaml",
        [
            *FEDERATED,
            "faults.oversized={clients: [6], extra_bytes: 4000}",
            "federation.max_reply_bytes=200000",
            "faults.dropout=0.3",
        ],
    ),
    "v-oversized-unbounded": (
        "quickstart.yaml",
        [*FEDERATED, "faults={oversized: {clients: [1, 2], extra_bytes: 400}}"],
    ),
    "v-vectorized-faults": ("faults.yaml", [*FEDERATED, "engine={name: vectorized}"]),
    "v-vectorized-private-critic": (
        "quickstart-local-critic.yaml",
        [*FEDERATED, "engine={name: vectorized}", "strategy={name: group_aware}"],
    ),
}


def canonical_csv(df: pd.DataFrame) -> str:
    """The metrics table as CSV text with every float written exactly (17 significant digits)."""
    return df.to_csv(index=False, float_format="%.17g")


def read_table(text: str) -> pd.DataFrame:
    """A table written by `canonical_csv`, read back with the store's column types."""
    return pd.read_csv(
        io.StringIO(text),
        keep_default_na=False,
        na_values={"value": ["nan", "NaN"]},
        dtype={"scope": str, "group_by": str, "group": str, "metric": str},
    )


def assert_same(table: pd.DataFrame, expected: pd.DataFrame, scenario: Path) -> None:
    """The golden comparison: exactly, or for a convolutional case its rows exactly and its
    values to rounding. Convolutions go through oneDNN, whose kernels depend on the CPU's
    instruction set: the first step already rounds differently on another machine (~1e-7
    relative, measured: an AVX-512 EPYC against the recording machine), and by round 2 a
    sample or two of the 300 evaluated changes mode — so values to rounding for what training
    writes, to a few samples for the evaluation."""
    if not _convolutional(scenario):
        pd.testing.assert_frame_equal(table, expected, check_exact=True)
        return
    pd.testing.assert_frame_equal(
        table.drop(columns="value"), expected.drop(columns="value"), check_exact=True
    )
    got_v = pd.to_numeric(table["value"], errors="coerce").to_numpy()
    exp_v = pd.to_numeric(expected["value"], errors="coerce").to_numpy()
    train = table["metric"].str.startswith("train.").to_numpy()
    np.testing.assert_allclose(got_v[train], exp_v[train], rtol=1e-4, equal_nan=True)
    np.testing.assert_allclose(got_v[~train], exp_v[~train], rtol=1e-2, atol=1e-2, equal_nan=True)


def _convolutional(scenario: Path) -> bool:
    gan = yaml.safe_load(scenario.read_text())["gan"]
    return "conv" in (gan["generator"].get("kind"), gan["critic"].get("kind"))


def run_stored(path: Path, out: Path) -> pd.DataFrame:
    """Run one stored, resolved scenario and return its metrics table."""
    from fedgan.simulator.api import run
    from fedgan.simulator.scenario import load

    return run(load(path), out_dir=out).metrics


def main(names: list[str]) -> None:
    import tempfile

    from fedgan.simulator.scenario import load, resolved_yaml

    torch.set_num_threads(1)
    SCENARIOS.mkdir(exist_ok=True)
    TABLES.mkdir(exist_ok=True)
    for name, (file, overrides) in CASES.items():
        if names and name not in names:
            continue
        s = load(ROOT / "scenarios" / file, overrides)
        path = SCENARIOS / f"{name}.yaml"
        path.write_text(resolved_yaml(s))
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            table = run_stored(path, Path(tmp))
        (TABLES / f"{name}.csv").write_text(canonical_csv(table))
        print(f"{name}: {len(table)} rows, {time.perf_counter() - t0:.1f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
