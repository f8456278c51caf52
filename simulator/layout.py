"""Rich tables laid out to a terminal width: columns that do not fit go on in another table."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from rich import box
from rich.console import Console, RenderableType
from rich.measure import Measurement
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

_MEASURE = Console(width=10_000, file=io.StringIO())


@dataclass(frozen=True)
class Column:
    """A column of a fitted table: its header (wrapped at spaces when narrow) and alignment."""

    header: str
    justify: Literal["left", "right", "center"] = "right"


def _longest_word(texts: Sequence[str]) -> int:
    return max((len(w) for t in texts for w in t.split()), default=1)


def fit_tables(
    title: str,
    columns: Sequence[Column],
    rows: Sequence[Sequence[str]],
    width: int,
    *,
    keys: int = 1,
    caption: str | None = None,
) -> list[RenderableType]:
    """`rows` (cells in rich markup) as tables no wider than `width` characters, each under
    its title (plain text, wrapped to `width` — not to a narrow table).

    The first `keys` columns (labels) repeat in every table and wrap at spaces when narrow;
    the other columns are never cut (a number cut to "0.…" is worse than none) and their
    headers wrap at spaces: as many columns as fit go in one table, the rest in the next
    ones, titled "(2/3)" and so on. `caption` (rich markup) goes under the last table.
    """
    cells = [[Text.from_markup(c) for c in r] for r in rows]
    plain = [[c.plain for c in r] for r in cells]
    full = [
        max([len(columns[i].header), *(_MEASURE.measure(r[i]).maximum for r in cells)])
        for i in range(len(columns))
    ]
    # Labels may wrap down to their longest word; numbers and their headers' words may not.
    least = [
        min(full[i], _longest_word([columns[i].header, *(r[i] for r in plain)]))
        if i < keys
        else max([_longest_word([columns[i].header]), *(len(r[i]) for r in plain)])
        for i in range(len(columns))
    ]
    head = list(range(keys))
    # Deciding what fits, a label keeps its full length up to a third of the line: a label
    # wrapped to let one more column in reads worse than a second table.
    planned = [
        max(least[i], min(full[i], width // 3)) if i < keys else least[i]
        for i in range(len(columns))
    ]
    chunks: list[list[int]] = []
    for i in range(keys, len(columns)):
        if chunks and _width(planned, head + [*chunks[-1], i]) <= width:
            chunks[-1].append(i)
        else:
            chunks.append([i])
    out: list[RenderableType] = []
    for n, chunk in enumerate(chunks or [[]]):
        idx = head + chunk
        widths = {i: least[i] for i in idx}
        spare = width - _width(least, idx)
        # Labels take what is left, up to their full length; then headers unwrap.
        for i in [*head, *chunk]:
            grow = max(min(full[i] - widths[i], spare), 0)
            widths[i] += grow
            spare -= grow
        suffix = f" ({n + 1}/{len(chunks)})" if len(chunks) > 1 else ""
        t = _bare()
        for i in idx:
            c = columns[i]
            t.add_column(c.header, justify=c.justify, width=widths[i], overflow="fold")
        for r in cells:
            t.add_row(*(r[i] for i in idx))
        out += [Padding(Text(title + suffix, style="bold"), (1, 0, 0, 0)), t]
    if caption:
        out.append(Text.from_markup(caption))
    return out


def _bare() -> Table:
    # Two spaces between columns, no side edges: the most columns a terminal line holds.
    return Table(
        box=box.SIMPLE_HEAD, padding=(0, 1), collapse_padding=True, show_edge=False, pad_edge=False
    )


def _width(widths: Sequence[int], idx: Sequence[int]) -> int:
    """Characters a table of columns `idx` at these widths takes (padding and separators)."""
    t = _bare()
    for i in idx:
        t.add_column(width=widths[i])
    return Measurement.get(_MEASURE, _MEASURE.options, t).maximum
