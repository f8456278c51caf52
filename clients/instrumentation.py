"""What a client keeps of its own statistics under privacy: the simulator's instrumentation.

Under `privacy:` a reply carries only the privatized release (`simulator.messages.released`);
the statistics a client computed on its data — losses, D(x), Lipschitz estimates, local scores,
DP-SGD's clipped fraction — never reach the server. So that a researcher can still read them,
the client appends them to `<run folder>/instrumentation/client-<partition>.jsonl` (one JSON
object a line: round, client, kind, values), a file no server code reads: the simulator's
view of the client, marked as such, not part of the protocol. A client that does not know the
run folder (a deployment node on another machine) keeps nothing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedgan.simulator.messages import RELEASED_KEYS, MetricValue
from fedgan.wire.records import RUN_DIR_KEY

FOLDER = "instrumentation"


def keep(
    run_config: Mapping[str, Any],
    partition: int,
    round_: int,
    kind: str,
    metrics: Mapping[str, MetricValue],
) -> None:
    """Append the withheld part of a reply's `metrics` (all but `RELEASED_KEYS`) to the
    client's instrumentation file under the run folder (nothing without one)."""
    run_dir = run_config.get(RUN_DIR_KEY)
    if not run_dir:
        return
    kept = {k: _plain(v) for k, v in metrics.items() if k not in RELEASED_KEYS}
    folder = Path(str(run_dir)) / FOLDER
    folder.mkdir(exist_ok=True)
    line = json.dumps({"round": round_, "client": partition, "kind": kind, "values": kept})
    with open(folder / f"client-{partition}.jsonl", "a", encoding="utf-8") as fh:
        fh.write(line + "\n")


def _plain(v: MetricValue) -> Any:
    """A JSON value (NaN and ±∞ as null: the file stays strict JSON)."""
    if isinstance(v, list):
        return [_plain(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v
