"""The README's promises: the custom-strategy walk-through works when copied into a new file."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from simulator.engines.runner import run_federated
from simulator.federation import client_train, initial_state, make_gan
from simulator.messages import split_arrays
from simulator.store import load_run
from tests.conftest import tiny

README = Path(__file__).resolve().parent.parent / "README.md"


def test_custom_strategy_walkthrough_runs_and_weights_as_documented(tmp_path: Path) -> None:
    code = re.search(r"```python\n(# my_rule\.py\n.*?)```", README.read_text(), re.S)
    assert code, "the README has the my_rule.py block"
    plugin = tmp_path / "my_rule.py"
    plugin.write_text(code.group(1))
    s = tiny(
        strategy={"name": f"{plugin}:LeastCoveredFirst", "params": {"power": 2.0}},
        federation={"rounds": 1},
    )
    res = run_federated(s, tmp_path / "runs")
    kinds = {e["kind"] for e in load_run(res.path).events}
    assert kinds == {"run_started", "run_finished"}
    # Oracle: the documented weights n_k · (1.05 − coverage_k)², from the clients' own updates.
    init, _ = split_arrays(initial_state(s, make_gan(s)).arrays(), "both")
    ups = [client_train(s, c, 1, init, None) for c in range(4)]
    cov = np.nan_to_num([u.metrics["local.coverage"] for u in ups], nan=0.0)
    w = np.array([u.metrics["num-examples"] for u in ups]) * (1.05 - cov) ** 2
    w = w / w.sum()
    ckpt = np.load(res.path / "checkpoints" / "round-000001.npz")
    for key in init:
        expected = sum(wi * u.arrays[key] for wi, u in zip(w, ups, strict=True))
        np.testing.assert_allclose(ckpt[key], expected, rtol=1e-5, atol=1e-6)
