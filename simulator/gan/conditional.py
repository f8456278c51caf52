"""Conditional training (CTGAN's conditional vector with training-by-sampling, Xu et al. 2019)
as a stabilization option against minority collapse: `gan.conditional: {column, sampling}`.

The condition
-------------
A condition is one *option*: a category of one conditioned group column (`column: all`:
every group column, an option is a (column, category) pair and CTGAN's sampler picks a column
uniformly, then a category). The generator sees [z, c] and the critic sees [x, c], c the
one-hot option [K] (K options in all), so both networks' input widths grow by K.

How c travels: in the latent. A conditional GAN's latent has one more coordinate than
`gan.latent_dim` (`GAN.config.latent_dim` = L + 1); its last coordinate u ~ N(0, 1) picks the
option by the inverse CDF of the options' *empirical* frequencies q (Φ(u) falls in option o's
interval [Q_{o−1}, Q_o)). So every caller that draws standard normal latents and calls
`GAN.G` (evaluation, scoring, `fedgan sample`, the server's generators) gets samples whose
conditions follow the data's frequencies, as CTGAN samples "the original condition vector"
at generation; and a chosen option o is forced by setting u to Φ⁻¹ of the middle of its
interval (`Condition.code`). Training-by-sampling sets that coordinate to the sampled options.

Training-by-sampling
--------------------
Each batch draws its options by `sampling` — `log_frequency` p_o ∝ log(1 + n_o) (CTGAN),
`uniform` p_o = 1/K, `empirical` p_o ∝ n_o (with `all`: 1/J per column, then within the
column) — then a real row *with* that option from the client's own per-option row pools
(`Sampler`). A client holds some options only: it samples among those, with the global
probabilities renormalized over them (`Condition.sampler`). The global counts n_o are the
sum of the clients' counts: in the simulator read from the partition (a real deployment needs
the clients to release their per-category counts — a client statistic, so `gan.conditional`
is refused under privacy).

The cross-entropy term
----------------------
CTGAN adds to the generator's loss the cross-entropy between the conditioned column's
generated one-hot span and the condition, which makes the generator honour c. That needs the
conditioned column to be *generated* (a categorical column of a mixed table, one-hot in X;
`Dataset.info["encoding"]` names its span, see `_spans`). For a group label that is not a
column of X — a mixture's `mode`, images' `label`, a table's group column that is not
generated — there is nothing to read it from: no term, and the generator learns c only from
the critic seeing [x, c], as conditional GANs on images do (Mirza & Osindero 2014). Where the
span exists the term is −(1/B) Σ_i log p_i[c_i] (p the generated span's probabilities from the
softmax head; the rows of options without a span add 0, as CTGAN's masked sum), which is
`F.cross_entropy` of the span's logits when the head is a softmax.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from fedgan.simulator.data.base import Dataset


class FederatedData(Protocol):
    """What the samplers read of `prepare.FederatedData` (named here, not imported: prepare
    builds GANs, which import this module): each client's training row positions."""

    @property
    def client_train(self) -> list[np.ndarray]: ...


SAMPLINGS = ("log_frequency", "uniform", "empirical")
ALL = "all"


def option_probabilities(counts: np.ndarray, columns: np.ndarray, sampling: str) -> np.ndarray:
    """The training sampler's probabilities of the K options.

    counts [K]: rows of each option; columns [K]: the option's column index (0..J−1). Within
    each column p ∝ log(1 + n) (`log_frequency`), 1 (`uniform`) or n (`empirical`); the J
    columns get 1/J each (CTGAN: a column uniformly, then a category). Options with n = 0
    get 0 (never drawn: no row to pair them with).
    """
    n = np.asarray(counts, dtype=np.float64)
    if sampling == "log_frequency":
        w = np.log1p(n)
    elif sampling == "uniform":
        w = (n > 0).astype(np.float64)
    elif sampling == "empirical":
        w = n.copy()
    else:
        raise ValueError(f"unknown sampling {sampling!r}; allowed: {', '.join(SAMPLINGS)}")
    cols = np.asarray(columns)
    p = np.zeros_like(w)
    live = [j for j in np.unique(cols) if w[cols == j].sum() > 0]
    for j in live:
        sel = cols == j
        p[sel] = w[sel] / w[sel].sum() / len(live)
    return p


def renormalized(p: np.ndarray, held: np.ndarray) -> np.ndarray:
    """A client's sampler: the global probabilities p [K] restricted to the options it holds
    (`held` [K] bool) and renormalized over them."""
    q = np.where(held, p, 0.0)
    if q.sum() <= 0:
        raise ValueError("the client holds no row of any conditioned category")
    return q / q.sum()


@dataclass(frozen=True)
class Sampler:
    """One client's training-by-sampling: option probabilities and per-option row pools.

    probs [K] float64; rows: the pools concatenated (row indices into the client's own
    training rows, option by option); start/size [K]: each option's pool within `rows`.
    """

    probs: Tensor
    rows: Tensor
    start: Tensor
    size: Tensor

    def options(self, gen: torch.Generator, shape: Sequence[int]) -> Tensor:
        """Options [*shape] (long) drawn i.i.d. from `probs` with `gen`."""
        n = math.prod(shape)
        if n == 0:
            return torch.zeros(tuple(shape), dtype=torch.long)
        return torch.multinomial(self.probs, n, replacement=True, generator=gen).view(*shape)

    def pick(self, options: Tensor, gen: torch.Generator) -> Tensor:
        """One row (uniform, with replacement) of each option's pool: indices into the
        client's rows, the shape of `options`. An option with an empty pool is refused."""
        size = self.size[options]
        if bool((size == 0).any()):
            bad = sorted({int(o) for o in options[size == 0].flatten().tolist()})
            raise ValueError(f"no training row of condition option(s) {bad} on this client")
        u = torch.rand(options.shape, generator=gen, dtype=torch.float64)
        at = torch.minimum((u * size).long(), size - 1)
        return self.rows[self.start[options] + at]


@dataclass(frozen=True, eq=False)
class Condition:
    """What a conditional GAN conditions on (module doc).

    columns: the conditioned group columns; categories[j]: column j's categories (sorted);
    option_column [K]: each option's column index; codes [N_train, J]: each training row's
    option in every column (pooled training split); sampling: the training sampler's rule;
    frequency [K]: the empirical option frequencies q (1/J per column) that the latent's
    last coordinate follows when not set; span_pos [K]: index in X of the option's one-hot
    entry when its column is generated (−1: not generated, no cross-entropy); span_scale: the
    value of a generated one-hot entry (probabilities are x / span_scale).
    """

    columns: tuple[str, ...]
    categories: tuple[tuple[Any, ...], ...]
    option_column: np.ndarray
    codes: np.ndarray
    sampling: str
    frequency: np.ndarray
    span_pos: np.ndarray
    span_scale: float = 1.0
    """The generated one-hot's value (the encoding's `onehot_scale`): p = x / span_scale."""

    @property
    def width(self) -> int:
        """K, the one-hot condition's size."""
        return len(self.option_column)

    @property
    def labels(self) -> list[str]:
        """Each option as `column=category` (`column: all`) or the category alone."""
        out = []
        for j, cats in enumerate(self.categories):
            for c in cats:
                out.append(f"{self.columns[j]}={c}" if len(self.columns) > 1 else str(c))
        return out

    # --- the latent's condition coordinate ------------------------------------------------------

    @functools.cached_property
    def _bounds(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(lower, upper thresholds in u-space [K], the middle code of each option [K])."""
        q = np.asarray(self.frequency, dtype=np.float64)
        hi = np.cumsum(q)
        lo = hi - q
        from scipy.special import ndtri

        mid = ndtri((lo + hi) / 2)
        lo_u, hi_u = ndtri(lo), ndtri(hi)
        lo_u[0], hi_u[-1] = -np.inf, np.inf
        return lo_u, hi_u, mid

    def code(self, options: Tensor) -> Tensor:
        """The latent coordinate u that makes each option of `options` (long) the condition."""
        mid = torch.as_tensor(self._bounds[2], dtype=torch.float32)
        return mid[options]

    def one_hot(self, u: Tensor) -> Tensor:
        """The one-hot condition [..., K] that latent coordinates u [...] pick (pure; runs under
        vmap): option o where Φ⁻¹(Q_{o−1}) ≤ u < Φ⁻¹(Q_o)."""
        lo, hi, _ = self._bounds
        lo_t = torch.as_tensor(lo, dtype=u.dtype, device=u.device)
        hi_t = torch.as_tensor(hi, dtype=u.dtype, device=u.device)
        x = u.unsqueeze(-1)
        return ((x >= lo_t) & (x < hi_t)).to(u.dtype)

    def option_of(self, c: Tensor) -> Tensor:
        """The option index of one-hot conditions c [..., K]."""
        return c.argmax(-1)

    # --- training-by-sampling ---------------------------------------------------------------------

    def counts(self, idx: np.ndarray) -> np.ndarray:
        """Rows of each option [K] among training rows `idx`."""
        out = np.zeros(self.width, dtype=np.int64)
        for j in range(len(self.columns)):
            out += np.bincount(self.codes[idx, j], minlength=self.width)
        return out

    def global_probs(self, counts: np.ndarray | None = None) -> np.ndarray:
        """The training sampler's probabilities [K] over the pooled counts (default: all rows)."""
        n = self.counts(np.arange(len(self.codes))) if counts is None else counts
        return option_probabilities(n, self.option_column, self.sampling)

    def sampler(self, idx: np.ndarray, global_counts: np.ndarray | None = None) -> Sampler:
        """The sampler of a client whose training rows are `idx` (into the pooled training
        split; its data tensor holds them in this order): the global probabilities (over
        `global_counts`, default the pooled split's) renormalized over the options it holds,
        and its per-option pools."""
        own = self.counts(idx)
        p = renormalized(self.global_probs(global_counts), own > 0)
        pools = [
            np.flatnonzero(self.codes[idx, self.option_column[o]] == o) for o in range(self.width)
        ]
        sizes = np.array([len(x) for x in pools], dtype=np.int64)
        start = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        rows = np.concatenate(pools).astype(np.int64) if sizes.sum() else np.zeros(0, np.int64)
        return Sampler(
            torch.as_tensor(p),
            torch.as_tensor(rows),
            torch.as_tensor(start),
            torch.as_tensor(sizes),
        )

    # --- the generator's cross-entropy term -----------------------------------------------------

    def cross_entropy(self, x: Tensor, c: Tensor) -> Tensor:
        """−(1/B) Σ_i log(x_i[span_pos(c_i)] / span_scale) over rows whose option's column is
        generated (the others add 0): CTGAN's masked cross-entropy, read from the softmax
        head's probabilities. x [B, d] generated rows, c [B, K] one-hot; a scalar. Pure."""
        pos = torch.as_tensor(self.span_pos, device=x.device)
        has = (pos >= 0).to(x.dtype)
        at = (c * pos.clamp(min=0).to(x.dtype)).sum(-1).long()  # [B]: each row's entry in X
        p = torch.gather(x, -1, at.unsqueeze(-1)).squeeze(-1) / self.span_scale
        nll = -torch.log(p.clamp(min=torch.finfo(x.dtype).tiny))
        return ((c * has).sum(-1) * nll).sum() / x.shape[0]

    @property
    def has_cross_entropy(self) -> bool:
        """Whether any conditioned column is generated (a span in X)."""
        return bool((self.span_pos >= 0).any())


def _spans(ds: Dataset, column: str, categories: Sequence[Any]) -> tuple[np.ndarray, float]:
    """(index in X of each category's one-hot entry, the one-hot's value) when `column` is a
    generated categorical column, else (−1 each, 1).

    Reads the mixed-table encoding (`Dataset.info["encoding"]`, `simulator.data.encoding`):
    its `columns` list, the categorical entry named `column` with its `start` and
    `categories`, and `onehot_scale` (the softmax head's output is the category's probability
    times that scale). No encoding, or the column not generated: not in X.
    """
    none = np.full(len(categories), -1, dtype=np.int64), 1.0
    enc = ds.info.get("encoding") if isinstance(ds.info, dict) else None
    if not isinstance(enc, dict):
        return none
    entry = next(
        (c for c in enc.get("columns", []) if isinstance(c, dict) and c.get("name") == column),
        None,
    )
    if entry is None or entry.get("kind") != "categorical":
        return none
    order = {str(c): i for i, c in enumerate(entry["categories"])}
    start = int(entry["start"])
    pos = np.array([start + order[str(c)] if str(c) in order else -1 for c in categories])
    return pos.astype(np.int64), float(enc.get("onehot_scale", 1.0))


def build_condition(column: str, sampling: str, train: Dataset) -> Condition:
    """The condition of `gan.conditional` on the pooled training split `train`."""
    from fedgan.simulator.grouping import group_sort_key

    names = [str(c) for c in train.groups.columns] if column == ALL else [column]
    cats: list[tuple[Any, ...]] = []
    option_column: list[int] = []
    codes = np.zeros((len(train.X), len(names)), dtype=np.int64)
    spans: list[np.ndarray] = []
    scale = 1.0
    for j, name in enumerate(names):
        values = train.groups[name]
        cs = tuple(sorted(values.unique().tolist(), key=group_sort_key))
        offset = len(option_column)
        lookup = {v: offset + i for i, v in enumerate(cs)}
        codes[:, j] = np.array([lookup[v] for v in values.tolist()], dtype=np.int64)
        cats.append(cs)
        option_column += [j] * len(cs)
        pos, sc = _spans(train, name, cs)
        spans.append(pos)
        scale = sc if (pos >= 0).any() else scale
    oc = np.array(option_column, dtype=np.int64)
    counts = np.zeros(len(oc), dtype=np.int64)
    for j in range(len(names)):
        counts += np.bincount(codes[:, j], minlength=len(oc))
    freq = option_probabilities(counts, oc, "empirical")
    return Condition(
        tuple(names), tuple(cats), oc, codes, sampling, freq, np.concatenate(spans), scale
    )


# --- federated weights: π_j(c) ------------------------------------------------------------------


def client_counts(cond: Condition, data: FederatedData) -> np.ndarray:
    """n_{j,o}: training rows of option o on client j, [n_clients, K] (the partition's counts:
    what clients would release for the server's sampler)."""
    return np.stack([cond.counts(ix) for ix in data.client_train])


def row_weights(w: np.ndarray, counts: np.ndarray, options: np.ndarray) -> np.ndarray:
    """Per-row client weights of a conditional server-held step, [K_clients, B].

    w [K_clients]: the clients' (normalised) weights ρ_j — the target mixture Σ_j ρ_j p_j;
    counts [K_clients, K]: n_{j,o}; options [B]: each feedback row's condition. Row i's weight
    of client j is the mixture's posterior π_j(c_i) = ρ_j p_j(c_i) / Σ_k ρ_k p_k(c_i), with
    p_j(c) = n_{j,c}/n_j: ∝ n_{j,c} when ρ_j ∝ n_j (UA-GAN's `pi: size`), and 0 for a client
    with no row of c. A row no answering client holds gets 0 everywhere (it teaches nothing).
    """
    n = np.asarray(counts, dtype=np.float64)
    n_j = n.sum(axis=1, keepdims=True)
    p = np.divide(n, n_j, out=np.zeros_like(n), where=n_j > 0)[:, options]  # [Kc, B]
    raw = np.asarray(w, dtype=np.float64)[:, None] * p
    tot = raw.sum(axis=0, keepdims=True)
    return np.divide(raw, tot, out=np.zeros_like(raw), where=tot > 0)


def uagan_feedback_rows(
    gan: Any, logits: Tensor, grads: Tensor, pi_rows: Tensor
) -> tuple[Tensor, Tensor]:
    """UA-GAN's feedback against Φ(x|c) = Σ_j π_j(c) o_j(x|c) with per-row weights
    pi_rows [K, B] (`row_weights`): logit_ua,i = logsumexp_j(log π_{j,i} + l_{j,i}); e = ∂L_G/∂x
    [B, d] (rows no client holds: 0). logits [K, B], grads [K, B, d]. Returns (e, L_G)."""
    valid = pi_rows.sum(0) > 0  # [B]
    log_pi = torch.where(
        pi_rows > 0, torch.log(pi_rows.clamp(min=1e-300)), torch.full_like(pi_rows, -torch.inf)
    )
    a = log_pi + logits
    a = torch.where(valid[None, :], a, torch.zeros_like(a))
    lg = torch.logsumexp(a, dim=0).detach().requires_grad_(True)
    with torch.enable_grad():
        loss = gan.objective.generator_loss(lg)
        (dl,) = torch.autograd.grad(loss, lg)
    resp = torch.softmax(a, dim=0)
    e = dl[:, None] * torch.einsum("kb,kbd->bd", resp, grads)
    e = torch.where(valid[:, None], e, torch.zeros_like(e))
    return e, loss.detach()


# --- conditioned sampling (`fedgan sample --group`) ---------------------------------------------


def option_index(cond: Condition, group: str) -> int:
    """The option of `fedgan sample --group G` (G as written on the command line: a category,
    or `column=category` with `column: all`); a ValueError lists the allowed ones."""
    labels = cond.labels
    if group in labels:
        return labels.index(group)
    raise ValueError(
        f"--group {group!r} is not a category of the conditioned column "
        f"{'/'.join(cond.columns)}; allowed: {', '.join(labels)}"
    )


@torch.no_grad()
def sample_group(
    gan: Any, g: dict[str, Tensor], n: int, option: int, gen: torch.Generator
) -> Tensor:
    """n generated rows [n, d] of a conditional GAN's generator parameters `g`, all with
    condition `option`: standard normal latents with the condition coordinate set to the
    option's code (module doc)."""
    cond = gan.condition
    assert cond is not None
    z = torch.randn(n, gan.config.latent_dim, generator=gen)
    z[:, -1] = cond.code(torch.full((n,), option, dtype=torch.long))
    return gan.G(g, z)


def client_sampler(cond: Condition, data: FederatedData, client: int) -> Sampler:
    """Client `client`'s training-by-sampling over its training rows (`data.client_train`, in
    that order: the rows of its data tensor), the global probabilities taken over every
    client's training rows (the sum of the counts they release) and renormalized over the
    options it holds."""
    key = (id(data), client)
    hit = _SAMPLERS.get(key)
    if hit is not None and hit[0] is cond:
        return hit[1]
    total = client_counts(cond, data).sum(axis=0)
    out = cond.sampler(data.client_train[client], total)
    if len(_SAMPLERS) > 4096:  # many runs in one process: drop the old ones
        _SAMPLERS.clear()
    _SAMPLERS[key] = (cond, out)
    return out


_SAMPLERS: dict[tuple[int, int], tuple[Condition, Sampler]] = {}
"""Built samplers by (federated data object, client): a client's pools are the same every round."""


@contextlib.contextmanager
def conditioned(gan: Any, option: int) -> Iterator[list[int]]:
    """Within the block, `gan.sample` (a conditional GAN's) draws rows of `option` only —
    what `fedgan sample --group` wraps around `simulator.sample.draw`. Yields a list that
    collects the sizes of the conditioned draws (empty after the block: nothing sampled
    through this GAN object, so the caller must not claim the rows are of `option`)."""
    if gan.condition is None:
        raise ValueError("the GAN is not conditional")
    old, gan.sample_option = gan.sample_option, option
    old_log, gan.sample_log = gan.sample_log, []
    try:
        yield gan.sample_log
    finally:
        gan.sample_option, gan.sample_log = old, old_log
