"""Write the bundled mixed-type table, scenarios/tables/mixed.csv, deterministically.

    python scenarios/tables/make_table.py [--out PATH] [--rows N]

12,000 synthetic people, seed 0, every number rounded to a fixed precision so the file's bytes
are the same on every machine:

========== ============ ==========================================================
column     type         distribution
========== ============ ==========================================================
region     categorical  north 35 %, south 30 %, east 18 %, west 12 %, islands 5 %
sex        categorical  F / M, 50 % each (the sensitive attribute)
education  categorical  school / college / university / doctorate, by region
smoker     bool         ~ 20 %, more often in the islands
age        integer      18..90 (bounded), older in the islands
hours      float        bimodal: part time ~ N(20, 3), full time ~ N(40, 4), 0..80
income     float        log-normal, depends on education, sex and hours, ≥ 0
========== ============ ==========================================================

The islands (5 %) are the rare category: 600 rows, 120 of them held out under the default 20 %
split. Their rows differ in more than the label (older, more smokers, fewer part-timers, lower
income), so a generator that drops them loses a region of the joint distribution, not a name.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

REGIONS = ("north", "south", "east", "west", "islands")
SHARES = (0.35, 0.30, 0.18, 0.12, 0.05)
EDUCATION = ("school", "college", "university", "doctorate")
OUT = Path(__file__).with_name("mixed.csv")


def make(n_rows: int = 12_000, seed: int = 0) -> pd.DataFrame:
    """The table as a DataFrame (exact region counts by largest remainder, rows shuffled)."""
    rng = np.random.default_rng(seed)
    raw = np.asarray(SHARES) * n_rows
    counts = np.floor(raw).astype(int)
    counts[np.argsort(-(raw - counts), kind="stable")[: n_rows - counts.sum()]] += 1
    region = np.repeat(np.arange(len(REGIONS)), counts)
    rng.shuffle(region)
    islands = region == REGIONS.index("islands")
    sex = rng.choice(np.array(["F", "M"]), size=n_rows)
    edu_p = np.where(islands[:, None], [0.55, 0.3, 0.13, 0.02], [0.3, 0.3, 0.3, 0.1])
    edu = (rng.random(n_rows)[:, None] > np.cumsum(edu_p, axis=1)).sum(axis=1)
    smoker = rng.random(n_rows) < np.where(islands, 0.45, 0.18)
    age = np.clip(np.rint(rng.normal(np.where(islands, 58, 42), 12)), 18, 90).astype(np.int64)
    part = rng.random(n_rows) < np.where(islands, 0.1, 0.3)
    hours = np.where(part, rng.normal(20, 3, n_rows), rng.normal(40, 4, n_rows))
    hours = np.clip(hours, 0, 80).round(1)
    log_inc = (
        9.6
        + 0.25 * edu
        + 0.08 * (sex == "M")
        + 0.02 * (hours - 35)
        - 0.3 * islands
        + rng.normal(0, 0.35, n_rows)
    )
    income = np.maximum(np.exp(log_inc), 0.0).round(0)
    return pd.DataFrame(
        {
            "region": np.asarray(REGIONS)[region],
            "sex": sex,
            "education": np.asarray(EDUCATION)[edu],
            "smoker": smoker,
            "age": age,
            "hours": hours,
            "income": income,
        }
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--rows", type=int, default=12_000)
    args = ap.parse_args()
    make(args.rows).to_csv(args.out, index=False, float_format="%.1f")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
