"""Item 12's preregistration: the text quotes the module's constants, and the rule's parameters
are the defaults `group_dro` runs with."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from fedgan.server.strategies.fair import GroupDROFedAvg
from fedgan.simulator.findings import every_skew as f12
from fedgan.simulator.weighting import GroupDRO

ROOT = Path(__file__).resolve().parents[2]


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("> ", " ")).strip()


def test_preregistration_quotes_the_expectation_and_rule_verbatim() -> None:
    doc = _flat((ROOT / "docs" / "prereg-every-skew.md").read_text(encoding="utf-8"))
    assert _flat(f12.EXPECTATION) in doc
    assert _flat(f12.RULE) in doc
    assert "η = 0.1, floor = 0.2" in doc
    assert f12.PARAMS == {"step_size": 0.1, "floor": 0.2}


def test_every_entry_point_defaults_to_the_preregistered_parameters() -> None:
    for fn in (GroupDRO.__init__, GroupDROFedAvg.__init__):
        p = inspect.signature(fn).parameters
        assert {k: p[k].default for k in ("step_size", "floor")} == f12.PARAMS


def test_the_skews_scenarios_exist() -> None:
    for where in f12.SKEWS.values():
        assert (ROOT / where.split(" ")[0]).is_file(), where
