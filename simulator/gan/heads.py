"""Output heads of a generator for mixed-type tables: an activation per span of its output.

A mixed table's encoded row (`simulator.data.encoding`) is a concatenation of spans: a
standardized number (one column, left as the network's linear output), a categorical column's
one-hot (scaled by 1/√2), or, under mode-specific normalization, a scalar in [−1, 1] plus the
one-hot of its mixture mode. The generator's last linear layer gives raw values for the whole
row; `apply_heads` maps each span to the set its encoding lives in.

Softmax, not Gumbel-softmax: the training step is a pure function whose randomness is drawn
outside it (`GAN.draw_steps`), and every protocol, the evaluation and `fedgan sample` call the
generator as a deterministic map z → x. Gumbel noise inside the head would need a noise stream
of its own in each of those places. The cost is known (CTGAN's reason for Gumbel): a soft
vector is not a one-hot, and a critic can tell them apart, which pushes the generator to
saturate its softmax — it does, in practice, on WGAN-GP tables. Decoding and grouping read a
span by argmax (`encoding.category_of`, `encoding.harden`), so the soft values never reach the
user's table.

Pure torch: no in-place writes, works on any leading batch shape and under `torch.func.vmap`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

ACTIVATIONS = ("softmax", "tanh")
"""What a head may apply to its span."""

Span = tuple[int, int, str, float]
"""(start, end, activation, scale): output columns start..end−1 get `activation`, then × scale."""


def check_spans(spans: Sequence[Sequence[object]], dim: int) -> tuple[Span, ...]:
    """`spans` as sorted, non-overlapping `Span` tuples inside [0, dim); ValueError otherwise."""
    out: list[Span] = []
    for sp in spans:
        if len(sp) != 4:
            raise ValueError(f"an output span is (start, end, activation, scale), got {sp!r}")
        start, end, act, scale = sp
        if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= dim):
            raise ValueError(f"output span {sp!r} is not inside the generator's {dim} outputs")
        if act not in ACTIVATIONS:
            raise ValueError(f"output span {sp!r}: activation must be one of {ACTIVATIONS}")
        if not isinstance(scale, int | float) or not scale > 0:
            raise ValueError(f"output span {sp!r}: scale must be a positive number")
        out.append((start, end, str(act), float(scale)))
    out.sort()
    for a, b in zip(out, out[1:], strict=False):
        if b[0] < a[1]:
            raise ValueError(f"output spans {a} and {b} overlap")
    return tuple(out)


def apply_heads(x: Tensor, spans: Sequence[Span], temperature: float = 1.0) -> Tensor:
    """Each span of x [..., d] through its activation (softmax over the span, divided by
    `temperature` first; or tanh) times its scale; columns outside every span pass unchanged.

    Returns a new tensor [..., d]. Spans must be sorted and disjoint (`check_spans`)."""
    parts: list[Tensor] = []
    pos = 0
    for start, end, act, scale in spans:
        if start > pos:
            parts.append(x[..., pos:start])
        seg = x[..., start:end]
        seg = torch.softmax(seg / temperature, dim=-1) if act == "softmax" else torch.tanh(seg)
        parts.append(seg * scale if scale != 1.0 else seg)
        pos = end
    if pos < x.shape[-1]:
        parts.append(x[..., pos:])
    return torch.cat(parts, dim=-1)


@dataclass(frozen=True)
class Heads:
    """A generator's output heads: `spans` (checked, sorted) and the softmax temperature."""

    spans: tuple[Span, ...]
    temperature: float = 1.0

    def __call__(self, x: Tensor) -> Tensor:
        return apply_heads(x, self.spans, self.temperature)
