"""What went wrong with a generator: every failure found, most severe first, with its numbers.

The groups a generator forgets come from the one definition of `simulator.metrics.forgetting`
(mass inside the groups' k-NN balls); the diagnosis names them first and judges fidelity and
diversity on the rest, so it tells the same story as every table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from fedgan.simulator.metrics.forgetting import FORGOTTEN_MASS_RATIO, KEEP_COVERAGE, kept

Label = Literal["healthy", "mode_dropping", "manifold_collapse", "low_fidelity", "low_diversity"]

SEVERITY: tuple[Label, ...] = (
    "mode_dropping",
    "manifold_collapse",
    "low_fidelity",
    "low_diversity",
)
"""Failure kinds from the most severe: a forgotten group first (someone is not served at
all), then samples off the data that reach little of it, then samples off the data, then
groups generated too narrowly to cover."""

__all__ = [
    "FORGOTTEN_MASS_RATIO",
    "KEEP_COVERAGE",
    "MIN_GROUP_DENSITY",
    "SEVERITY",
    "Diagnosis",
    "Failure",
    "ForgottenGroup",
    "GroupFidelity",
    "Label",
    "diagnose",
    "kept",
]


MIN_GROUP_DENSITY = 0.5
"""The per-group density under which a group's own samples count as off its data (the
`min_group_density` default of `diagnose`, and what the evaluator selects `blurred` by)."""


@dataclass(frozen=True)
class ForgottenGroup:
    """A forgotten group as the diagnosis names it: "mode=0", its mass ratio (generated mass
    over its share of the on-support samples) and its coverage."""

    name: str
    mass_ratio: float
    coverage: float

    def text(self) -> str:
        return f"{self.name} (mass {self.mass_ratio:.3f} × its share, coverage {self.coverage:.3f})"


@dataclass(frozen=True)
class GroupFidelity:
    """A group (not forgotten) whose own samples fall off it: "mode=3", the precision and
    density of the samples attributed to it (nearest held-out point in the group)."""

    name: str
    precision: float
    density: float

    def text(self) -> str:
        return f"{self.name} (precision {self.precision:.3f}, density {self.density:.3f})"


@dataclass(frozen=True)
class Failure:
    """One failure the diagnosis found: its kind and a sentence citing the numbers."""

    kind: Label
    text: str


@dataclass(frozen=True)
class Diagnosis:
    """The headline label (the most severe failure, or healthy), every failure found, most
    severe first, the forgotten groups' names, and the two tests behind the label."""

    label: Label
    reason: str
    fidelity_ok: bool
    diversity_ok: bool
    failures: tuple[Failure, ...] = field(default=())
    forgotten: tuple[str, ...] = field(default=())


def diagnose(
    precision: float,
    recall: float,
    density: float,
    coverage: float,
    expected_coverage: float | None = None,
    *,
    forgotten: Sequence[ForgottenGroup] = (),
    blurred: Sequence[GroupFidelity] = (),
    rest_coverage: float | None = None,
    min_precision: float = 0.6,
    min_density: float = 0.75,
    min_recall: float = 0.6,
    min_coverage: float = 0.25,
    min_coverage_ratio: float = 0.3,
    min_group_density: float = MIN_GROUP_DENSITY,
) -> Diagnosis:
    """Every failure of a generator, most severe first, from PRDC and its forgotten groups.

    Rule::

        forgotten      any group forgotten (`simulator.metrics.forgetting`)  → mode_dropping
        fidelity low   ⇔ precision < min_precision  or density < min_density
        coverage low   ⇔ coverage of the held-out points outside the forgotten groups
                         (`rest_coverage`; the total without groups) < floor
        floor = min_coverage_ratio · expected_coverage   if expected_coverage is given
              = min_coverage                             otherwise

        density low and coverage low                     → manifold_collapse  samples sit off
                                                           the data and reach little of it
        fidelity low otherwise, or a group's own samples → low_fidelity       the data is
        have density < min_group_density (`blurred`)       reached, many samples fall off it
        fidelity ok, coverage low or recall < min_recall → low_diversity      every group gets
                                                           its mass, but the samples are too
                                                           narrow (or off-centre) to cover it

    The label is the most severe failure found (`SEVERITY`), "healthy" when there is none. One
    exception: when the groups that are not forgotten collapse too (manifold_collapse found
    beside forgotten groups), the generator has not dropped some groups but missed the data
    as a whole — an untrained generator puts a handful of samples near one group and
    "forgets" every other — so manifold_collapse heads the list and the forgotten groups
    follow it.

    Why these thresholds (constructed generators on the 8-ring with two 2 % modes, 2,500
    samples against 5,000 held-out points, k = 5; `tests/metrics/test_diagnosis.py`):
    perfect samples give P .996 D .99 R .99 C .87 (expected .87); a 2σ blur P .82 D .66–.69
    R 1.0 C .64 — density is what separates blur, hence 0.75 (a 1.5σ blur, D .86, passes);
    the centralized twin at the regime budget, sharp but slightly off-centre modes, P .97
    D .97–.99 R .78–.96 but C only .29–.37 — coverage falls with a sub-σ offset of a 1 %-wide
    mode, so the coverage floor is a loose 0.3 × expected; a dropped group is caught by its
    mass instead, and interpolation between two modes at distance 4–6 gives D ≤ 0.54 and
    C ≤ 0.1. Recall is inflated by a few stray samples with large k-NN balls, so it never
    decides whether a group is forgotten.

    Parameters
    ----------
    precision, recall, density, coverage : float
        PRDC totals (density may exceed 1).
    expected_coverage : float, optional
        Coverage of two same-distribution samples of these sizes; makes the coverage test
        relative to it.
    forgotten : sequence of ForgottenGroup
        The forgotten groups of every grouping, named ("mode=0").
    blurred : sequence of GroupFidelity
        Groups not forgotten whose own samples have density below `min_group_density` (a
        blurred majority mode hides in the totals when the other modes are sharp); the caller
        selects them with that threshold.
    rest_coverage : float, optional
        Coverage of the held-out points in no forgotten group (default: `coverage`).
    min_precision, min_density, min_recall, min_coverage, min_coverage_ratio : float
        Thresholds of the tests.
    min_group_density : float
        The per-group density under which a group's own samples count as off its data. Lower
        than the total's: a 2 % mode of the regime's twin, sharp but off-centre, reads 0.66
        on its 50 samples; a majority mode blurred 4× reads ≈ 0.1 (`tests/metrics`).

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
    rest = coverage if rest_coverage is None else rest_coverage
    rest_name = "coverage" if not forgotten else "coverage of the groups not forgotten"

    precision_low = not precision >= min_precision  # `not ≥` also catches NaN
    density_low = not density >= min_density
    coverage_low = not rest >= floor
    recall_low = not recall >= min_recall
    fid_text = [
        f"precision {precision:.3f} < {min_precision:g}" if precision_low else "",
        f"density {density:.3f} < {min_density:g}" if density_low else "",
    ]
    fid_text = [t for t in fid_text if t]
    if blurred:
        shown_b = ", ".join(b.text() for b in blurred[:8])
        more_b = f" and {len(blurred) - 8} more" if len(blurred) > 8 else ""
        fid_text.append(
            f"{len(blurred)} group(s) generated off their data (density < "
            f"{min_group_density:g}): "
            f"{shown_b}{more_b}"
        )

    found: list[Failure] = []
    if forgotten:
        shown = ", ".join(f.text() for f in forgotten)  # every one: who is forgotten matters
        found.append(
            Failure(
                "mode_dropping",
                f"{len(forgotten)} group(s) forgotten — less than {FORGOTTEN_MASS_RATIO:g} × "
                f"their share of the on-support samples: {shown}",
            )
        )
    if density_low and coverage_low:
        found.append(
            Failure(
                "manifold_collapse",
                "; ".join(fid_text)
                + f" and {rest_name} {rest:.3f} < {floor_text}: samples lie off the data and "
                "reach little of it",
            )
        )
    elif fid_text:
        found.append(
            Failure(
                "low_fidelity",
                "; ".join(fid_text)
                + f" while {rest_name} {rest:.3f} holds: samples reach the data but many fall "
                "off it",
            )
        )
    if not (density_low and coverage_low) and (coverage_low or recall_low):
        parts = [f"{rest_name} {rest:.3f} < {floor_text}" if coverage_low else ""]
        parts.append(f"recall {recall:.3f} < {min_recall:g}" if recall_low else "")
        found.append(
            Failure(
                "low_diversity",
                "; ".join(p for p in parts if p)
                + ": the groups are generated but too narrowly (or off-centre) to be covered",
            )
        )
    found.sort(key=lambda f: SEVERITY.index(f.kind))
    if forgotten and any(f.kind == "manifold_collapse" for f in found):
        # The groups not forgotten are not reached either: the generator misses the data as
        # a whole (an untrained one puts a handful of samples near one group and "forgets"
        # the rest), so that heads the list; the forgotten groups are still named.
        found = [*found[1:], found[0]]
    label: Label = found[0].kind if found else "healthy"
    if found:
        reason = "; ".join(f"{f.kind}: {f.text}" for f in found)
    else:
        reason = (
            f"precision {precision:.3f}, density {density:.3f}, recall {recall:.3f} and "
            f"coverage {coverage:.3f} all pass their thresholds, and no group is forgotten"
        )
    return Diagnosis(
        label,
        reason,
        fidelity_ok=not (precision_low or density_low or blurred),
        diversity_ok=not (forgotten or coverage_low or recall_low),
        failures=tuple(found),
        forgotten=tuple(f.name for f in forgotten),
    )
