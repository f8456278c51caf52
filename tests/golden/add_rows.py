"""Re-record the golden tables after a change that only *adds* metrics, checking that it does.

`python -m tests.golden.add_rows fed.bytes_down fed.bytes_up fed.weight` reruns every stored
scenario (not the scenario files, which move on), drops the rows of the named metrics from the
new table, asks for exactly the recorded table, and only then writes the new table with the
added rows (`--check`: compare only). Any other difference is reported, naming the case, and
nothing is written for that case. Runs on the reference GAN step, as `test_golden.py` does.

`--redefined eval.recall eval.coverage` (names after it, up to the next option or the end):
metrics whose definition changed on purpose — their rows are dropped from both tables before
the comparison (everything else must still be identical), and the new table's rows of them
are written. The one-story change (issue 24) used it for the clients' evaluation rows.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from tests.golden.make_golden import (
    SCENARIOS,
    TABLES,
    assert_same,
    canonical_csv,
    read_table,
    run_stored,
)


def main(args: list[str]) -> int:
    write = "--check" not in args
    args = [a for a in args if a != "--check"]
    redefined: list[str] = []
    if "--redefined" in args:
        i = args.index("--redefined")
        redefined, args = args[i + 1 :], args[:i]
    added = args
    if not added and not redefined:
        print("name the added metrics", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    # The tables were recorded on the reference step (as test_golden.py runs them).
    from fedgan.simulator.gan import fastmlp

    fastmlp.ENABLED = False
    os.environ["FEDGAN_FAST_MLP"] = "0"  # and in any process a case starts
    failed = []
    for path in sorted(SCENARIOS.glob("*.yaml")):
        name = path.stem
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            text = canonical_csv(run_stored(path, Path(tmp)))
        new = read_table(text)
        old = read_table((TABLES / f"{name}.csv").read_text())
        kept = new[~new["metric"].isin([*added, *redefined])].reset_index(drop=True)
        old = old[~old["metric"].isin(redefined)].reset_index(drop=True)
        try:
            assert_same(kept, old, path)
        except AssertionError as exc:
            failed.append(name)
            print(f"{name}: differs beyond the added rows:\n{exc}", flush=True)
            continue
        extra = len(new) - len(kept)
        if write:
            (TABLES / f"{name}.csv").write_text(text)
        print(f"{name}: identical but for {extra} added rows, {time.perf_counter() - t0:.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
