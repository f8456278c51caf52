"""Findings item 11 by part: `python -m fedgan.simulator.findings.item11 --parts sample` runs
part (a) (sample level, ~30 min on 2 cores) or (b) (user level, ~2.5 h) alone and stores the item
in docs/findings.md, as `fedgan findings --only 11` does for both. `--cache DIR` keeps each run's
outcome as it finishes, so a sweep longer than one sitting resumes where it stopped."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fedgan.simulator.findings import privacy_cost
from fedgan.simulator.findings.suite import store_item


def main(argv: Sequence[str] | None = None) -> int:
    """Run item 11 (or some of its parts) and store it in docs/findings.md, as `fedgan
    findings --only 11` does for the whole item."""
    import argparse
    import time

    ap = argparse.ArgumentParser(description="findings item 11, by part")
    both = ",".join(privacy_cost.PARTS)
    ap.add_argument("--parts", default=both, help="sample,user (default: both)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default="docs")
    ap.add_argument(
        "--cache",
        default=None,
        help="folder keeping each run's outcome: a rerun skips what is there (resumes a sweep)",
    )
    args = ap.parse_args(argv)
    parts = tuple(p for p in args.parts.split(",") if p)
    bad = [p for p in parts if p not in privacy_cost.PARTS]
    if bad:
        ap.error(f"unknown part(s) {bad}; parts: {', '.join(privacy_cost.PARTS)}")
    out = Path(args.out)
    t0 = time.perf_counter()
    cache = Path(args.cache) if args.cache else None
    f = privacy_cost.run(False, out / "figures", args.jobs, parts, cache)
    store_item(out, f, time.perf_counter() - t0)
    print(f"item 11 ({', '.join(parts)}): {f.outcome}. {f.verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
