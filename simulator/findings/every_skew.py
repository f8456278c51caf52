"""Item 12 (issue 27): one weighting for every skew — the design fixed before any run.

Preregistered in docs/prereg-every-skew.md (this module's constants, `EXPECTATION` and `RULE`
verbatim; a test keeps them equal). The group-level rule is `group_dro`
(`simulator.weighting.group_dro_weights`), its parameters the defaults committed with it
(`GROUP_DRO_STEP_SIZE`, `GROUP_DRO_FLOOR`). Nothing here is a result."""

from __future__ import annotations

from fedgan.simulator.weighting import GROUP_DRO_FLOOR, GROUP_DRO_STEP_SIZE

PARAMS = {"step_size": GROUP_DRO_STEP_SIZE, "floor": GROUP_DRO_FLOOR}
"""`group_dro`'s parameters for every run of the item (not tuned per skew)."""

SKEWS: dict[str, str] = {
    "one-of-5": "scenarios/quickstart.yaml",
    "one-of-10": "scenarios/protocols/minority-fedavg.yaml",
    "dirichlet-0.05": "scenarios/findings/federation.yaml (partition.params.alpha=0.05)",
    "two-of-20": "scenarios/protocols/2of20-fedavg.yaml",
}
"""The four skews and the scenario each runs (UA-GAN: `federation.protocol=uagan`)."""

PROTOCOLS = ("fedavg", "uagan")
WEIGHTINGS = ("none", "agnostic", "coverage_weighted", "group_dro")
"""Per protocol: unweighted, the two per-client rules at their item-10 parameters (agnostic
step 0.5, coverage_weighted q 2), and the group-level rule."""
SEEDS = (0, 1, 2)
KEEP = 0.3
"""A minority mode is kept at coverage ≥ this (`simulator.metrics.diagnosis.KEEP_COVERAGE`)."""
PRECISION_SHARE = 0.9
"""The setting's mean precision must reach this share of the twin's."""
BUDGET_GAIN = 0.02
"""two-of-20: the budget doubles until the twin's minority coverage gains less than this."""
BUDGET_MAX = 4
"""… or the budget reaches this multiple of the scenario's."""
CPU_HOURS = 20.0
"""The whole item's CPU budget; every run is saved (resumable across sessions)."""

EXPECTATION = (
    "Where the minority lives on one client (one-of-5, one-of-10), group_dro does what agnostic "
    "does — its weight goes to the one client holding the uncovered groups — and keeps both "
    "minority modes under UA-GAN in at least 2 of 3 seeds. Under Dirichlet 0.05, where every "
    "client lacks some modes, its per-group signal does not chase one client per round as "
    "agnostic does, and UA-GAN + group_dro keeps more minority coverage than UA-GAN + agnostic. "
    "FedAvg + group_dro keeps the minority only where FedAvg learns the majority at all. "
    "two-of-20 is the open case: we expect it to miss there at the scenario's budget."
)
RULE = (
    "The target is met by one setting (protocol, weighting group_dro, the parameters PARAMS) "
    "if, in every skew where the centralized twin keeps both minority modes (coverage ≥ 0.3 "
    "each) in at least 2 of 3 seeds, the setting keeps both in at least 2 of 3 seeds and its "
    "mean precision is at least 0.9 × the twin's mean precision. Otherwise it is missed, and "
    "the verdict names, per skew, the best setting (most seeds keeping both, then mean "
    "minority coverage) and the measured reason (minority mass ratio ≈ 0: dropped; > 0 with "
    "low coverage: blurred; precision below the bar: the majority paid). Per protocol and "
    "skew, group_dro against each other weighting: the paired (by seed) bootstrap 95 % "
    "interval of the difference in minority coverage, Bonferroni-corrected over the "
    "comparisons of the item."
)
