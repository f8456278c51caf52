"""The strategies the registry builds: Flower's and the simulator's own skip the aggregate of
train metrics (the round loop never reads it); a plug-in keeps whatever it is given."""

from __future__ import annotations

from pathlib import Path

from fedgan.server.strategies import BUILT_IN, build_strategy, unread_train_metrics
from flwr.serverapp.strategy import FedAvg

PLUGIN = """
from flwr.serverapp.strategy import FedAvg


class ReadsItsMetrics(FedAvg):
    pass
"""


def test_built_ins_skip_the_metric_aggregate_and_plug_ins_keep_flower_s(tmp_path: Path) -> None:
    assert {"fedavg", "qfedavg", "krum", "group_dro", "quality_qfedavg"} <= BUILT_IN
    needs = {"qfedavg": {"client_learning_rate": 0.1}}
    for name in ("fedavg", "fedprox", "qfedavg", "fedmedian", "group_dro", "coverage_weighted"):
        built = build_strategy(name, needs.get(name, {}))
        assert built.train_metrics_aggr_fn is unread_train_metrics, name
    plugin = tmp_path / "mine.py"
    plugin.write_text(PLUGIN)
    own = build_strategy(f"{plugin}:ReadsItsMetrics", {})
    assert own.train_metrics_aggr_fn is FedAvg().train_metrics_aggr_fn  # Flower's default
