"""Findings item 12 (issue 27): `python -m fedgan.simulator.findings.item12` runs the
preregistered design (docs/prereg-every-skew.md) and stores the item in docs/findings.md.
Each run's outcome is kept as it finishes in the tracked records folder
(`every_skew.RECORDS`, or `--cache DIR`), so the item — several CPU-hours — resumes where it
stopped, across sessions and fresh checkouts once the records are committed; `--interim` runs
nothing and stores the item from what the records hold (partial tables, verdict pending)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fedgan.simulator.findings import every_skew
from fedgan.simulator.findings.suite import record_pending, store_item


def main(argv: Sequence[str] | None = None) -> int:
    """Run item 12 and store it in docs/findings.md."""
    import argparse
    import time

    ap = argparse.ArgumentParser(description="findings item 12: one weighting for every skew")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default="docs")
    ap.add_argument("--quick", action="store_true", help="1 seed, tiny nets, 4 rounds")
    ap.add_argument(
        "--cache",
        default=str(every_skew.RECORDS),
        help="folder keeping each run's outcome (resumes; default: the tracked records folder)",
    )
    ap.add_argument(
        "--interim",
        action="store_true",
        help="run nothing: store the item from the runs --cache holds (partial, verdict pending)",
    )
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    cache = Path(args.cache)
    f = every_skew.run(args.quick, args.jobs, cache, interim=args.interim)
    if args.interim:
        status = f"measuring: {f.values['done']} of {f.values['runs']} runs"
        record_pending(Path(args.out), [f], status)
    elif not args.quick:
        store_item(Path(args.out), f, time.perf_counter() - t0)
    print(f"item 12: {f.outcome}. {f.verdict}")
    print(f.table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
