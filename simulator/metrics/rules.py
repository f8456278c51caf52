"""The rules: the one function per question every view reads — `forgotten` (which groups a
generator forgets), `served` (the share of a client's points in groups not forgotten) and
`worst_client` — held in a registry so that a study can swap one (and a test can prove that
every view follows)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fedgan.simulator.metrics import forgetting
from fedgan.simulator.registry import Registry

RULES: Registry[Callable[..., Any]] = Registry("rule")
"""`forgotten`, `served`, `worst_client` (`simulator.metrics.forgetting`)."""
RULES.add("forgotten", forgetting.forgotten_groups)
RULES.add("served", forgetting.served_share)
RULES.add("worst_client", forgetting.worst_client)
