"""A coarse label for what went wrong with a generator, from its four PRDC totals."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Label = Literal["healthy", "mode_dropping", "manifold_collapse", "low_fidelity"]


@dataclass(frozen=True)
class Diagnosis:
    """The label, a one-line reason citing the numbers, and the two tests behind it."""

    label: Label
    reason: str
    fidelity_ok: bool
    diversity_ok: bool


def diagnose(
    precision: float,
    recall: float,
    density: float,
    coverage: float,
    expected_coverage: float | None = None,
    *,
    min_precision: float = 0.6,
    min_density: float = 0.8,
    min_recall: float = 0.6,
    min_coverage: float = 0.7,
    min_coverage_ratio: float = 0.75,
) -> Diagnosis:
    """Label a generator from precision, recall, density and coverage.

    Rule (two tests, then a 2 × 2 table)::

        fidelity ok   ⇔ precision ≥ min_precision  and density ≥ min_density
        diversity ok  ⇔ recall ≥ min_recall        and coverage ≥ floor
        floor = min_coverage_ratio · expected_coverage   if expected_coverage is given
              = min_coverage                             otherwise

        fidelity ok,  diversity ok   → "healthy"
        fidelity ok,  diversity low  → "mode_dropping"      samples are real-looking, but
                                                            parts of the real set are unreached
        fidelity low, diversity ok   → "low_fidelity"       the real set is reached, but many
                                                            samples fall off it (noise, blur)
        fidelity low, diversity low  → "manifold_collapse"  samples sit off the real manifold
                                                            (e.g. between modes) and reach
                                                            little of it

    Density carries most of the fidelity test: precision saturates near 1 as soon as a few
    real outliers have large balls, while density counts how many balls contain a sample.
    Coverage carries most of the diversity test for the same reason (recall is inflated by
    fake outliers). For two samples of one distribution, coverage is about
    ``expected_coverage`` (see :func:`simulator.metrics.expected_coverage`; ≈ 0.969 at k = 5,
    M = N), density about 1.

    Parameters
    ----------
    precision, recall, density, coverage : float
        PRDC totals (density may exceed 1).
    expected_coverage : float, optional
        Coverage of two same-distribution samples of these sizes; makes the coverage test
        relative to it.
    min_precision, min_density, min_recall, min_coverage, min_coverage_ratio : float
        Thresholds of the two tests.

    Returns
    -------
    Diagnosis
    """
    if expected_coverage is not None:
        floor = min_coverage_ratio * expected_coverage
        floor_text = f"{min_coverage_ratio:g} × expected {expected_coverage:.3f} = {floor:.3f}"
    else:
        floor = min_coverage
        floor_text = f"{floor:g}"

    fidelity_fails = []
    if not precision >= min_precision:  # `not ≥` also catches NaN
        fidelity_fails.append(f"precision {precision:.3f} < {min_precision:g}")
    if not density >= min_density:
        fidelity_fails.append(f"density {density:.3f} < {min_density:g}")
    diversity_fails = []
    if not recall >= min_recall:
        diversity_fails.append(f"recall {recall:.3f} < {min_recall:g}")
    if not coverage >= floor:
        diversity_fails.append(f"coverage {coverage:.3f} < {floor_text}")
    fidelity_ok = not fidelity_fails
    diversity_ok = not diversity_fails

    label: Label
    if fidelity_ok and diversity_ok:
        label = "healthy"
        reason = (
            f"precision {precision:.3f}, density {density:.3f}, recall {recall:.3f} and "
            f"coverage {coverage:.3f} all pass their thresholds"
        )
    elif fidelity_ok:
        label = "mode_dropping"
        reason = (
            f"fidelity holds (precision {precision:.3f}, density {density:.3f}) but "
            + "; ".join(diversity_fails)
            + ": part of the real distribution is not generated"
        )
    elif diversity_ok:
        label = "low_fidelity"
        reason = (
            "; ".join(fidelity_fails)
            + f" while recall {recall:.3f} and coverage {coverage:.3f} hold: samples reach "
            "the real distribution but many fall off it"
        )
    else:
        label = "manifold_collapse"
        reason = (
            "; ".join(fidelity_fails + diversity_fails)
            + ": samples lie off the real manifold and reach little of it"
        )
    return Diagnosis(label, reason, fidelity_ok, diversity_ok)
