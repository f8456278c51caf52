"""A coarse label for what went wrong with a generator, and what "keeps a mode" means.

Two definitions used everywhere in the project:

- a group (mode, class, sensitive attribute) is **kept** when the coverage of its held-out
  points is ≥ `KEEP_COVERAGE` (0.3): a share of its real points has a generated sample inside
  its own k-NN ball. Findings and benchmarks report "keeps both minority modes in n of m seeds"
  by this rule (`kept`).
- a group is **dropped** when it receives less than `DROPPED_MASS_RATIO` (0.1) of its share of
  the generated samples (each sample attributed to the group of its nearest real point). This
  is what the diagnosis calls mode dropping: unlike coverage, the generated mass does not fall
  when a mode is generated slightly off-centre or sharper than the data, so a good generator
  of a very narrow mixture (σ = 1 % of the ring radius) is not called dropping for that.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

Label = Literal["healthy", "mode_dropping", "manifold_collapse", "low_fidelity"]

KEEP_COVERAGE = 0.3
"""A group is kept when its coverage is at least this (with ≥ 100 held-out points a coverage
of 0.3 is known to about ±0.05)."""

DROPPED_MASS_RATIO = 0.1
"""A group is dropped when its share of generated samples is below this × its real share."""


def kept(coverage: float) -> bool:
    """Whether a group with this coverage is kept (NaN: not kept)."""
    return bool(coverage >= KEEP_COVERAGE)


def group_mass_ratios(
    real_groups: Sequence[object] | np.ndarray, fake_groups: Sequence[object] | np.ndarray
) -> dict[object, float]:
    """Generated share / real share of every group of the real points.

    real_groups [N]: the group of each held-out real point; fake_groups [M]: the group each
    generated sample is attributed to (that of its nearest real point). 1 for a generator that
    puts each group's share of samples there, 0 for a group it never reaches.
    """
    real = np.asarray(real_groups, dtype=object)
    fake = np.asarray(fake_groups, dtype=object)
    groups, n_real = np.unique(real.astype(str), return_counts=True)
    labels = {str(g): g for g in real.tolist()}
    fake_str = fake.astype(str)
    out: dict[object, float] = {}
    for g, n in zip(groups.tolist(), n_real.tolist(), strict=True):
        share_fake = float(np.count_nonzero(fake_str == g)) / max(len(fake), 1)
        out[labels[g]] = share_fake / (n / len(real))
    return out


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
    dropped_groups: Sequence[str] = (),
    min_precision: float = 0.6,
    min_density: float = 0.75,
    min_recall: float = 0.6,
    min_coverage: float = 0.25,
    min_coverage_ratio: float = 0.3,
) -> Diagnosis:
    """Label a generator from precision, recall, density and coverage, and its dropped groups.

    Rule (two tests, then a 2 × 2 table)::

        fidelity ok   ⇔ precision ≥ min_precision  and density ≥ min_density
        diversity ok  ⇔ recall ≥ min_recall        and coverage ≥ floor
                        and no group is dropped (`dropped_groups` is empty)
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

    Why these thresholds (constructed generators on the 8-ring with two 2 % modes, 2,500
    samples against 5,000 held-out points, k = 5; `tests/metrics/test_diagnosis.py`):
    perfect samples give P .996 D .99 R .99 C .87 (expected .87); a 2σ blur P .82 D .66–.69
    R 1.0 C .64 — density is what separates blur, hence 0.75 (a 1.5σ blur, D .86, passes);
    the centralized twin at the regime budget, sharp but slightly off-centre modes, P .97
    D .97–.99 R .78–.96 but C only .29–.37 — coverage falls with a sub-σ offset of a 1 %-wide
    mode, so the total coverage floor is a loose 0.3 × expected (one mode alone gives
    C .16 = 0.18 × expected); dropped groups are caught by their generated mass instead
    (`dropped_groups`), and interpolation between two modes at distance 4–6 gives D ≤ 0.54
    and R ≤ 0.24. Recall is inflated by a few stray samples with large k-NN balls, so it is
    never used alone to call a group kept or dropped.

    Parameters
    ----------
    precision, recall, density, coverage : float
        PRDC totals (density may exceed 1).
    expected_coverage : float, optional
        Coverage of two same-distribution samples of these sizes; makes the coverage test
        relative to it.
    dropped_groups : sequence of str
        Groups that receive < `DROPPED_MASS_RATIO` of their share of the samples, named
        (e.g. "mode=0").
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
    if dropped_groups:
        shown = ", ".join(dropped_groups[:8]) + (" ..." if len(dropped_groups) > 8 else "")
        diversity_fails.append(
            f"{len(dropped_groups)} group(s) get < {DROPPED_MASS_RATIO:g} × their share of the "
            f"samples ({shown})"
        )
    fidelity_ok = not fidelity_fails
    diversity_ok = not diversity_fails

    label: Label
    if fidelity_ok and diversity_ok:
        label = "healthy"
        reason = (
            f"precision {precision:.3f}, density {density:.3f}, recall {recall:.3f} and "
            f"coverage {coverage:.3f} all pass their thresholds, and no group is dropped"
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
