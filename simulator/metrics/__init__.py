"""Sample-quality metrics: precision/recall/density/coverage, mode metrics, per-group tables,
a coarse diagnosis and the Fréchet distance. Framework-free (numpy, scipy, torch CPU kernels).
"""

from fedgan.simulator.metrics.diagnosis import Diagnosis, diagnose
from fedgan.simulator.metrics.frechet import frechet_distance
from fedgan.simulator.metrics.groups import GroupReport, group_prdc
from fedgan.simulator.metrics.modes import ModeMetrics, mode_metrics
from fedgan.simulator.metrics.prdc import PRDC, expected_coverage, prdc

__all__ = [
    "PRDC",
    "Diagnosis",
    "GroupReport",
    "ModeMetrics",
    "diagnose",
    "expected_coverage",
    "frechet_distance",
    "group_prdc",
    "mode_metrics",
    "prdc",
]
