"""The GAN step of MLP generators and critics, hand-batched over stacked clients.

`GAN.step` under `torch.func.vmap` is exact and general, but on a CPU much of its time at these
sizes is not arithmetic (profile in `benchmarks/README.md`): vmap, torch.func and autograd put a
Python and dispatch layer around each of several hundred small kernels, the gradient penalty
re-runs the critic and builds a second graph for its double backward, skinny products (2-D data,
the critic's one output unit) reach MKL in a slow orientation, and the optimizer is a dozen
elementwise ops per parameter tensor. torch has no batched-MLP training step to call instead, so
this module writes the same update by hand:

- per layer, stacked weights and bias as one [C, out, in + 1] block: [h | 1] @ [W | b]ᵀ is the
  layer with its bias in the same GEMM, and δᵀ [h | 1] its weight and bias gradient at once;
  products whose result is a few columns wide are computed transposed, rank-1 ones as
  broadcasts (`_mm`);
- the backward written out with the activations' own aten backward kernels, and the gradient
  penalty's double backward too: for piecewise-linear activations (relu, leaky_relu) its
  second-derivative term vanishes, so it costs three small products a layer, and the penalty
  reuses the loss's critic forward when it is taken on the real (R1) or the fake points;
- each network's parameters, gradients and optimizer moments as flat [C, P] buffers updated in
  place, Adam as torch's fused CPU kernel (one pass over all parameters of all clients).

Same inputs as `GAN.step` (noise drawn outside, in the same blocks), same result to float
rounding (`tests/gan/test_fastmlp.py`: float64 agreement to ~1e-10 with the reference step).
Covered: `kind: mlp` generators and critics with the built-in activations and outputs, the
built-in objectives, no Lipschitz control, weight clipping, the gradient penalty (any sampling
and centre) and R1, Adam / RMSprop / SGD, FedProx anchors, the EMA, per-client learning rates and
ragged clients. `why_not(gan)` names what else a GAN uses (conv nets, the two-branch critic,
spectral norm, plug-ins): those take the vmap path.

DP-SGD (`GANConfig.dp`, `dpsgd.py`) is covered for all of the above (every objective, control,
activation and optimizer listed): `FastMLP.dp_gradient` clips per sample without materializing
per-sample gradients ("ghost clipping"). A real sample's gradient in a layer is a sum of a few
rank-1 terms U_t[i]ᵀ V_t[i] — the loss backward's δ ⊗ [h | 1] at its row (its penalty's σ''
sources included), at its interpolate's row, and the penalty's double-backward factors — so its
squared norm is Σ_layers Σ_{t,t'} (U_t[i]·U_t'[i])(V_t[i]·V_t'[i]), a few row-wise dot products,
and the clipped sum is the step's own GEMMs with sample i's rows scaled by min(1, C/‖g_i‖)/B
(0 for padding rows). The terms on generated points (loss on G(z), a `sampling: fake` penalty)
are the ordinary ones, unclipped; σC/B · dp_noise (whose `dpsgd.layout` is this module's flat
layout) is added to the gradient before the optimizer.
Each step on the CPU computes only the rows up to its largest realized batch.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
import torch.nn.functional as F
from fedgan.simulator.gan import dpsgd, lipschitz, objectives
from fedgan.simulator.gan.networks import MLPCritic, MLPGenerator
from fedgan.simulator.gan.optim import OptimizerSpec
from fedgan.simulator.gan.state import GANConfig, GANState, Params, StepNoise, draw_blocks
from torch import Tensor, nn


class GAN(Protocol):
    """What this module reads of a `train.GAN` (which dispatches to it, so it cannot import
    train.py): its configuration, module templates, objective and control."""

    config: GANConfig
    generator: nn.Module
    critic: nn.Module
    objective: objectives.Objective
    control: lipschitz.LipschitzControl

    def draw_steps(self, n_data: int, gen: torch.Generator, n_steps: int) -> StepNoise: ...


ENABLED = os.environ.get("FEDGAN_FAST_MLP", "1") != "0"
"""Use the hand-batched step where it applies (`FEDGAN_FAST_MLP=0`: always the vmap path)."""

aten = torch.ops.aten

_MALLOC_TUNED = False


def keep_freed_memory() -> None:
    """Ask glibc to keep freed memory for reuse (once per process; `FEDGAN_MALLOC_TUNE=0`
    leaves the allocator alone). A batched step frees and allocates ~20 MB of megabyte-sized
    tensors at 100 clients; with glibc's defaults the freed heap top goes back to the OS and
    the next allocations fault it in again, page by page (~5,000 page faults a step, ~20 % of
    its time). Keeping up to 512 MiB of it (and serving blocks up to 64 MiB from the heap)
    removes that; the peak memory does not change."""
    global _MALLOC_TUNED
    if _MALLOC_TUNED or os.environ.get("FEDGAN_MALLOC_TUNE", "1") == "0":
        return
    _MALLOC_TUNED = True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to tune
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    mallopt(m_mmap_threshold, 64 << 20)
    mallopt(m_trim_threshold, 512 << 20)


# ---- activations --------------------------------------------------------------------------------

Back = Callable[[Tensor, Tensor, Tensor], Tensor]
"""(grad, a, h) → grad ⊙ σ'(a), with a the pre-activation and h = σ(a)."""
Second = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]
"""(grad, e, a, h) → grad ⊙ e ⊙ σ''(a): the double backward's term through σ'."""


@dataclass(frozen=True)
class _Act:
    forward: Callable[[Tensor], Tensor]
    back: Back
    second: Second | None  # None: piecewise linear, σ'' = 0 almost everywhere
    inplace: bool = False
    """`forward` overwrites its input: `back` and `second` read only h (a is h)."""
    back_: Back | None = None
    """`back` written into its grad argument (a fresh buffer of ours): the step makes a dozen
    such [C, R, width] products, and a new one each costs an allocation and its page faults."""

    def back_into(self, g: Tensor, a: Tensor, h: Tensor) -> Tensor:
        return self.back(g, a, h) if self.back_ is None else self.back_(g, a, h)


_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _sig_second(g: Tensor, e: Tensor, a: Tensor, h: Tensor) -> Tensor:
    s = torch.sigmoid(a)
    return g * e * (s * (1 - s) * (2 + a * (1 - 2 * s)))


# The backward kernels are the ones autograd calls for these modules, so first derivatives round
# as on the reference path. relu, leaky_relu and tanh run in place: their backward needs only
# the output (a positive slope keeps the sign), which saves a [C, R, width] buffer a layer.
ACTS: dict[str, _Act] = {
    "relu": _Act(
        torch.relu_,
        lambda g, a, h: aten.threshold_backward(g, h, 0.0),
        None,
        True,
        lambda g, a, h: aten.threshold_backward.grad_input(g, h, 0.0, grad_input=g),
    ),
    "leaky_relu": _Act(
        lambda a: F.leaky_relu_(a, 0.2),
        lambda g, a, h: aten.leaky_relu_backward(g, h, 0.2, True),
        None,
        True,
        lambda g, a, h: aten.leaky_relu_backward.grad_input(g, h, 0.2, True, grad_input=g),
    ),
    "elu": _Act(
        F.elu,
        lambda g, a, h: aten.elu_backward(g, 1.0, 1.0, 1.0, False, a),
        lambda g, e, a, h: g * e * torch.where(a > 0, 0.0, h + 1.0),
    ),
    "gelu": _Act(
        F.gelu,
        lambda g, a, h: aten.gelu_backward(g, a),
        lambda g, e, a, h: g * e * (torch.exp(-0.5 * a * a) * _INV_SQRT_2PI * (2.0 - a * a)),
    ),
    "tanh": _Act(
        torch.tanh_,
        lambda g, a, h: aten.tanh_backward(g, h),
        lambda g, e, a, h: g * e * (-2.0 * h * (1.0 - h * h)),
        True,
        lambda g, a, h: aten.tanh_backward.grad_input(g, h, grad_input=g),
    ),
    "silu": _Act(F.silu, lambda g, a, h: aten.silu_backward(g, a), _sig_second),
}


def _act_name(m: nn.Module) -> str | None:
    """The `ACTS` entry a module computes (with the parameters `networks` builds), or None."""
    if isinstance(m, nn.LeakyReLU):
        return "leaky_relu" if m.negative_slope == 0.2 else None
    if isinstance(m, nn.ELU):
        return "elu" if m.alpha == 1.0 else None
    if isinstance(m, nn.GELU):
        return "gelu" if m.approximate == "none" else None
    names = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.SiLU: "silu"}
    return names.get(type(m))


# ---- batched products ---------------------------------------------------------------------------


def _mm(a: Tensor, b: Tensor) -> Tensor:
    """a [C, M, K] @ b [C, K, N]. MKL is slow on results only a few columns wide (N = 2 is ~5×
    slower than the transposed product), so those are computed as (bᵀaᵀ)ᵀ; K = 1 is a
    broadcast, not a GEMM."""
    if a.shape[-1] == 1:
        return a * b
    if b.shape[-1] <= 4 < a.shape[-2]:
        return torch.bmm(b.mT, a.mT).mT
    if a.shape[-1] <= 4:  # a few-term contraction (the first layer): 2× faster on a copy
        b = b.contiguous()
    return torch.bmm(a, b)


def _mm_into(a: Tensor, b: Tensor, out: Tensor) -> None:
    """out ← a @ b (`_mm`) for `out` a strided view, e.g. a layer's block of a flat gradient
    buffer. Through a fresh result and a copy: torch's CPU bmm loops over the batch one matrix
    at a time when its output is not contiguous (~30 % slower at 100 clients)."""
    out.copy_(_mm(a, b))


Work = dict[tuple[str, int, int], Tensor]
"""Buffers kept from step to step, by (pass, layer, rows): a forward pass's outputs live until
the step that made them is done, so the next step can write its own into the same memory."""


def _ones_column(c: int, r: int, width: int, like: Tensor, work: Work | None, key: tuple) -> Tensor:
    """A [C, R, width + 1] buffer whose last column is 1 (the bias input), the rest to be
    written; from `work` (allocated and filled once) when given."""
    buf = None if work is None else work.get(key)
    if buf is None or buf.shape != (c, r, width + 1):
        buf = like.new_empty(c, r, width + 1)
        buf[..., width] = 1.0
        if work is not None:
            work[key] = buf
    return buf


def augment(x: Tensor) -> Tensor:
    """x [C, R, d] → [x | 1] [C, R, d + 1]."""
    return F.pad(x, (0, 1), value=1.0)


# ---- networks -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layer:
    """One linear layer of C stacked clients as views of a flat buffer: `wb` [C, out, in + 1]
    holds the weights and, in its last column, the bias, so that [h | 1] @ wbᵀ is the layer with
    its bias in the same GEMM (no broadcast copy of the bias, no separate bias gradient)."""

    wb: Tensor
    w: Tensor  # wb[..., :in]
    wbT: Tensor  # wb.mT
    wT: Tensor  # w.mT


Layers = list[_Layer]


@dataclass
class _Cache:
    """A forward pass of R rows: the input [x | 1] [C, R, in + 1]; per hidden layer the
    pre-activation a [C, R, w] (the output's own storage for in-place activations), the output
    h [C, R, w] and a copy [h | 1] [C, R, w + 1] for the next layer's GEMM; the network's
    output [C, R, out] (and [out | 1])."""

    x: Tensor
    pre: list[Tensor]
    hid: list[Tensor]
    hid1: list[Tensor]
    out: Tensor
    out1: Tensor | None

    def rows(self, r0: int, r1: int) -> _Cache:
        def cut(ts: list[Tensor]) -> list[Tensor]:
            return [t[:, r0:r1] for t in ts]

        out1 = None if self.out1 is None else self.out1[:, r0:r1]
        return _Cache(
            self.x[:, r0:r1], cut(self.pre), cut(self.hid), cut(self.hid1), self.out[:, r0:r1], out1
        )


class _Net:
    """An MLP's layout in a flat parameter buffer [C, P] — layer after layer, each an
    [out, in + 1] block of weights and bias — and its forward and backward passes."""

    def __init__(self, module: nn.Module, act: str, tanh_out: bool) -> None:
        self.keys: list[tuple[str, str]] = []
        self.shapes: list[tuple[int, int]] = []
        for name, m in module.named_modules():
            if type(m) is nn.Linear:
                self.keys.append((f"{name}.weight", f"{name}.bias"))
                self.shapes.append((m.out_features, m.in_features))
        self.offsets: list[int] = []
        p = 0
        for o, i in self.shapes:
            self.offsets.append(p)
            p += o * (i + 1)
        self.size = p
        self.act = ACTS[act]
        self.tanh_out = tanh_out

    def blocks(self, flat: Tensor) -> list[Tensor]:
        """Each layer's [C, out, in + 1] block of a flat [C, P] buffer (views)."""
        return [
            flat[:, p : p + o * (i + 1)].view(-1, o, i + 1)
            for (o, i), p in zip(self.shapes, self.offsets, strict=True)
        ]

    def layers(self, flat: Tensor) -> Layers:
        out = []
        for wb, (_, i) in zip(self.blocks(flat), self.shapes, strict=True):
            w = wb[..., :i]
            out.append(_Layer(wb, w, wb.mT, w.mT))
        return out

    def flatten(self, params: Params, prefix: str = "", batch: bool = True) -> Tensor:
        """A stacked (or, batch=False, a single) parameter dict → [C, P] (C = 1 if single)."""
        parts = []
        for (wk, bk), (o, i) in zip(self.keys, self.shapes, strict=True):
            w, b = params[prefix + wk], params[prefix + bk]
            c = w.shape[0] if batch else 1
            parts.append(torch.cat([w.reshape(c, o, i), b.reshape(c, o, 1)], dim=-1).flatten(1))
        return torch.cat(parts, dim=1)

    def unflatten(self, flat: Tensor, prefix: str = "", batch: bool = True) -> Params:
        """Copies (never views of the buffers the step updates in place)."""
        out: Params = {}
        for (wk, bk), wb, (_, i) in zip(self.keys, self.blocks(flat), self.shapes, strict=True):
            wb = wb if batch else wb[0]
            out[prefix + wk] = wb[..., :i].clone()
            out[prefix + bk] = wb[..., i].clone()
        return out

    def forward(
        self,
        layers: Layers,
        x1: Tensor,
        ones_out: bool = False,
        work: Work | None = None,
        tag: str = "",
    ) -> _Cache:
        """The forward pass of rows x1 = [x | 1] [C, R, in + 1]; `ones_out`: also give the
        output as [out | 1] (the critic's input). With `work`, hidden outputs go to buffers
        kept there under `tag` (valid until the next forward pass with that tag)."""
        c, r = x1.shape[:2]
        pre: list[Tensor] = []
        hid: list[Tensor] = []
        hid1: list[Tensor] = []
        h1 = x1
        for j, layer in enumerate(layers[:-1]):
            width = layer.w.shape[1]
            buf = _ones_column(c, r, width, x1, work, (tag, j, r))
            # A contiguous result (see `_mm_into`), copied next to the ones column.
            a = _mm(h1, layer.wbT)
            h = self.act.forward(a)
            buf[..., :width].copy_(h)
            pre.append(a)
            hid.append(h)
            hid1.append(buf)
            h1 = buf
        last = layers[-1]
        width = last.w.shape[1]
        out1 = None
        out = _mm(h1, last.wbT)
        if self.tanh_out:
            out = out.tanh_()
        out1 = None
        if ones_out:
            out1 = _ones_column(c, r, width, x1, work, (tag, len(layers), r))
            out1[..., :width].copy_(out)
        return _Cache(x1, pre, hid, hid1, out, out1)

    def backward(
        self,
        layers: Layers,
        c: _Cache,
        top: Tensor,
        grad: Tensor | None = None,
        sources: Sequence[Tensor | None] = (),
    ) -> Tensor | None:
        """Backpropagate `top`, the adjoint of the output [C, R, out], through the forward pass
        `c`; `sources[j]`: an extra adjoint of hidden pre-activation j (the penalty's σ''
        term). With `grad` (a flat [C, P] buffer) the weight and bias gradients are written into
        it; without, the input's adjoint [C, R, in] is returned."""
        if self.tanh_out:
            top = aten.tanh_backward(top, c.out)
        blocks = None if grad is None else self.blocks(grad)
        delta = top
        for j in range(len(layers) - 1, -1, -1):
            if blocks is not None:
                _mm_into(delta.mT, c.hid1[j - 1] if j else c.x, blocks[j])  # δᵀ [h | 1]
                if j == 0:
                    return None
            e = _mm(delta, layers[j].w)
            if j == 0:
                return e
            delta = self.act.back_into(e, c.pre[j - 1], c.hid[j - 1])
            extra = sources[j - 1] if j - 1 < len(sources) else None
            if extra is not None:
                delta = delta.add_(extra)
        return None

    def deltas(
        self, layers: Layers, c: _Cache, top: Tensor, sources: Sequence[Tensor | None] = ()
    ) -> list[Tensor]:
        """`backward` without its GEMMs: the adjoint δ_j [C, R, out_j] of every layer's output
        (pre-activation), so that layer j's weight and bias gradient is δ_jᵀ [h_{j−1} | 1].
        For DP-SGD, which scales rows before those products (`FastMLP.dp_gradient`)."""
        if self.tanh_out:
            top = aten.tanh_backward(top, c.out)
        out = [top] * len(layers)
        delta = top
        for j in range(len(layers) - 1, 0, -1):
            out[j] = delta
            e = _mm(delta, layers[j].w)
            delta = self.act.back_into(e, c.pre[j - 1], c.hid[j - 1])
            extra = sources[j - 1] if j - 1 < len(sources) else None
            if extra is not None:
                delta = delta.add_(extra)
        out[0] = delta
        return out

    def penalty(
        self, layers: Layers, c: _Cache, lam: float, center: float
    ) -> tuple[Tensor, list[Tensor], list[Tensor | None]]:
        """λ·mean_rows(‖∇ₓv‖ − center)² of a critic (one output unit) at the rows of `c`, and
        its gradient by hand: the weight gradients of the double backward (biases get none) and
        the σ'' sources to add to the forward graph's backward. Returns (penalty [C], weight
        gradients per layer, sources per hidden layer)."""
        pen, us, vs, sources = self.penalty_terms(layers, c, lam, center)
        gw = [_mm(u.mT, v) for u, v in zip(us, vs, strict=False)]
        gw.append(vs[-1].sum(1, keepdim=True))  # e[last] is w_out broadcast over the rows
        return pen, gw, sources

    def penalty_terms(
        self, layers: Layers, c: _Cache, lam: float, center: float, per_row: bool = False
    ) -> tuple[Tensor, list[Tensor], list[Tensor], list[Tensor | None]]:
        """The penalty and the factors of its weight gradients: layer j's is Σ_rows
        u_j[r]ᵀ v_j[r] (u_j [C, R, out_j], v_j [C, R, in_j], no bias part) for j below the
        last, whose u is 1 (its gradient is Σ_rows v_last[r]). Returns (penalty, us, vs,
        σ'' sources). `per_row`: each row's own penalty λ(‖∇ₓv‖ − center)² [C, R] and
        gradient factors (no 1/R: a row's gradient as if it were a batch of one)."""
        act, hidden = self.act, len(layers) - 1
        w_out = layers[-1].w  # [C, 1, width]
        rows = c.x.shape[1]
        # Input gradient: the backward of v with adjoint 1. e[j]: adjoint of hidden output j,
        # d[j]: of its pre-activation.
        es: list[Tensor] = [w_out] * hidden
        ds: list[Tensor] = [w_out] * hidden
        e = w_out.expand(-1, rows, -1)
        for j in range(hidden - 1, -1, -1):
            es[j] = e
            # e is ours to overwrite unless it is w_out broadcast or σ'' needs it later.
            mine = j < hidden - 1 and act.second is None
            ds[j] = (act.back_into if mine else act.back)(e, c.pre[j], c.hid[j])
            e = _mm(ds[j], layers[j].w)
        g = e  # [C, R, d]
        norm = torch.sqrt((g * g).sum(-1) + 1e-12)
        dev = norm - center
        if per_row:
            pen = lam * (dev * dev)
            g_bar = g * ((2.0 * lam) * dev / norm).unsqueeze(-1)
        else:
            pen = lam * (dev * dev).mean(-1)
            g_bar = g * ((2.0 * lam / rows) * dev / norm).unsqueeze(-1)
        # Reverse of g = d[0] @ W0, then of d[j] = e[j] ⊙ σ'(a_j) and e[j] = d[j+1] @ W_{j+1}.
        vs: list[Tensor] = [g_bar]
        sources: list[Tensor | None] = [None] * hidden
        d_bar = _mm(g_bar, layers[0].wT)
        for j in range(hidden):
            if act.second is not None:
                sources[j] = act.second(d_bar, es[j], c.pre[j], c.hid[j])
            e_bar = act.back_into(d_bar, c.pre[j], c.hid[j])
            vs.append(e_bar)
            if j + 1 < hidden:
                d_bar = _mm(e_bar, layers[j + 1].wT)
        return pen, ds, vs, sources


# ---- objectives ---------------------------------------------------------------------------------

Terms = tuple[Tensor, Tensor, Tensor]
"""(loss [C], d loss / d v_real [C, B], d loss / d v_fake [C, B]) for the critic."""
GTerms = tuple[Tensor, Tensor]
"""(loss [C], d loss / d v_fake [C, B]) for the generator."""


def _ns_critic(vr: Tensor, vf: Tensor) -> Terms:
    # −log σ(v_real) − log(1 − σ(v_fake)); d/dv: σ(v) − 1 and σ(v)
    n = vr.shape[-1]
    loss = F.softplus(-vr).mean(-1) + F.softplus(vf).mean(-1)
    return loss, (torch.sigmoid(vr) - 1.0) / n, torch.sigmoid(vf) / n


def _mean_grad(v: Tensor, value: float) -> Tensor:
    return torch.full_like(v, value / v.shape[-1])


# Losses that are means of elementwise terms, with their derivatives, by objective class. A
# plug-in (or a subclass) is not in the table and takes the vmap path.
CRITIC_TERMS: dict[type, Callable[[Tensor, Tensor], Terms]] = {
    objectives.Saturating: _ns_critic,
    objectives.NonSaturating: _ns_critic,
    objectives.Wasserstein: lambda vr, vf: (
        vf.mean(-1) - vr.mean(-1),
        _mean_grad(vr, -1.0),
        _mean_grad(vf, 1.0),
    ),
    objectives.Hinge: lambda vr, vf: (
        F.relu(1.0 - vr).mean(-1) + F.relu(1.0 + vf).mean(-1),
        -(vr < 1.0).to(vr.dtype) / vr.shape[-1],
        (vf > -1.0).to(vf.dtype) / vf.shape[-1],
    ),
    objectives.LeastSquares: lambda vr, vf: (
        0.5 * ((vr - 1.0) ** 2).mean(-1) + 0.5 * (vf**2).mean(-1),
        (vr - 1.0) / vr.shape[-1],
        vf / vf.shape[-1],
    ),
    objectives.ForwardKL: lambda vr, vf: (
        -(vr.mean(-1) - torch.exp(vf - 1.0).mean(-1)),
        _mean_grad(vr, -1.0),
        torch.exp(vf - 1.0) / vf.shape[-1],
    ),
    objectives.ReverseKL: lambda vr, vf: (
        -(-torch.exp(-vr).mean(-1) - (vf - 1.0).mean(-1)),
        -torch.exp(-vr) / vr.shape[-1],
        _mean_grad(vf, 1.0),
    ),
}
GEN_TERMS: dict[type, Callable[[Tensor], GTerms]] = {
    objectives.Saturating: lambda v: (-F.softplus(v).mean(-1), -torch.sigmoid(v) / v.shape[-1]),
    objectives.NonSaturating: lambda v: (
        F.softplus(-v).mean(-1),
        (torch.sigmoid(v) - 1.0) / v.shape[-1],
    ),
    objectives.Wasserstein: lambda v: (-v.mean(-1), _mean_grad(v, -1.0)),
    objectives.Hinge: lambda v: (-v.mean(-1), _mean_grad(v, -1.0)),
    objectives.LeastSquares: lambda v: (
        0.5 * ((v - 1.0) ** 2).mean(-1),
        (v - 1.0) / v.shape[-1],
    ),
    objectives.ForwardKL: lambda v: (
        -torch.exp(v - 1.0).mean(-1),
        -torch.exp(v - 1.0) / v.shape[-1],
    ),
    objectives.ReverseKL: lambda v: (-(v - 1.0).mean(-1), _mean_grad(v, -1.0)),
}


# ---- optimizers over flat buffers ---------------------------------------------------------------

SLOTS = {"adam": ("m", "v"), "rmsprop": ("v",), "sgd": ("m",)}


def _slots(spec: OptimizerSpec) -> tuple[str, ...]:
    return () if spec.name == "sgd" and not spec.momentum else SLOTS[spec.name]


def _rows(active: Tensor | None, c: int) -> list[int]:
    return list(range(c)) if active is None else active.nonzero().flatten().tolist()


def _put(dst: Tensor, new: Tensor, active: Tensor | None) -> None:
    """dst ← new in place, only in the rows [C, ...] of active clients (all if None)."""
    if active is None:
        dst.copy_(new)
    else:
        dst.copy_(torch.where(active.view(-1, *([1] * (dst.dim() - 1))), new, dst))


def _fused_adam(
    spec: OptimizerSpec,
    p: list[Tensor],
    g: list[Tensor],
    m: list[Tensor],
    v: list[Tensor],
    step: list[Tensor],
    lr: float,
) -> None:
    torch._fused_adam_(
        p,
        g,
        m,
        v,
        [],
        step,
        lr=lr,
        beta1=spec.betas[0],
        beta2=spec.betas[1],
        weight_decay=spec.weight_decay,
        eps=spec.eps,
        amsgrad=False,
        maximize=False,
    )


def _update(
    spec: OptimizerSpec,
    p: Tensor,
    g: Tensor,
    state: dict[str, Tensor],
    lr: float | Tensor,
    active: Tensor | None,
    uniform: bool = False,
) -> None:
    """`optim.update` in place on flat buffers: p, g and moments [C, P], state['step'] [C], lr a
    float or one a client [C]; clients not `active` [C] keep everything. `uniform`: every
    client's step counter is the same (then Adam is one fused call)."""
    step = state["step"]
    step.add_(1 if active is None else active.to(step.dtype))
    if spec.name == "adam":
        # torch's fused CPU Adam: one pass over p, g, m, v instead of a dozen elementwise ops
        # (~15× faster at 100 clients × 2×64); same update as `optim.update` (L2 weight decay
        # added to the gradient) to float rounding. It takes one lr and one step counter per
        # tensor, so clients whose counters or rates differ are passed as rows.
        m, v = state["m"], state["v"]
        c = p.shape[0]
        if active is None and not isinstance(lr, Tensor) and uniform:
            _fused_adam(spec, [p], [g], [m], [v], [step[0]], lr)
            return
        rates = lr.tolist() if isinstance(lr, Tensor) else [lr] * c
        groups: dict[float, list[int]] = {}
        for r in _rows(active, c):
            groups.setdefault(rates[r], []).append(r)
        for rate, rows in groups.items():
            pick = [p[r] for r in rows], [g[r] for r in rows], [m[r] for r in rows]
            _fused_adam(spec, *pick, [v[r] for r in rows], [step[r] for r in rows], rate)
        return
    if isinstance(lr, Tensor):
        lr = lr.unsqueeze(-1)
    if spec.weight_decay:
        g = g + spec.weight_decay * p
    if spec.name == "rmsprop":
        v = torch.addcmul(state["v"] * spec.alpha, g, g, value=1 - spec.alpha)
        _put(state["v"], v, active)
        _put(p, p - lr * g / (v.sqrt() + spec.eps), active)
        return
    if spec.momentum:
        g = torch.add(state["m"] * spec.momentum, g)
        _put(state["m"], g, active)
    _put(p, p - lr * g, active)


# ---- the step -----------------------------------------------------------------------------------


@dataclass
class FlatState:
    """A stacked `GANState` as flat buffers, updated in place by `FastMLP.step`: parameters
    [C, P] per network (`_Net`'s layout), optimizer moments by slot [C, P] and step counters
    [C]; the EMA and the proximal anchors [C, P] or None. Also the step's working set: each
    network's layer views and gradient buffer, and the data with its ones column."""

    g: Tensor
    d: Tensor
    g_opt: dict[str, Tensor]
    d_opt: dict[str, Tensor]
    g_ema: Tensor | None
    g_anchor: Tensor | None
    d_anchor: Tensor | None
    step: int
    uniform: bool = False
    """Each optimizer's step counters are equal across clients (so they stay while every
    client is active; with ragged clients `active` is passed and rows are updated apart)."""
    g_layers: Layers = field(default_factory=list)
    d_layers: Layers = field(default_factory=list)
    g_grad: Tensor | None = None
    d_grad: Tensor | None = None
    data: Tensor | None = None  # the data tensor `data1` was built from
    data1: Tensor | None = None  # [data | 1] [C, N, d + 1]
    rows: Tensor | None = None  # arange(C)[:, None]
    work: Work = field(default_factory=dict)


class FastMLP:
    """The hand-batched step of one `GAN` (see the module docstring); build with `plan`."""

    def __init__(self, gan: GAN) -> None:
        c = gan.config
        self.gan = gan
        self.config = c
        self.gnet = _Net(gan.generator, c.generator.activation, c.generator.output == "tanh")
        self.dnet = _Net(gan.critic, c.critic.activation, False)
        self.critic_terms = CRITIC_TERMS[type(gan.objective)]
        self.gen_terms = GEN_TERMS[type(gan.objective)]
        self.probabilistic = gan.objective.probabilistic
        ctl = gan.control
        self.gp = ctl if isinstance(ctl, lipschitz.GradientPenalty) else None
        self.clip = ctl.c if isinstance(ctl, lipschitz.WeightClip) else None
        self.dp = c.dp
        self.dp_l0 = 0.0
        if c.dp is not None:
            zero = torch.zeros(1, 1, dtype=torch.float64)
            self.dp_l0 = float(self.critic_terms(zero, zero)[0])  # L([0], [0]): a constant
            # `dp_noise` is laid out as the flat buffer is ([W | b] rows, layer after layer).
            ref = torch.arange(self.dnet.size)
            back = self.dnet.flatten(dpsgd.unflatten(ref, gan.critic), batch=False)[0]
            assert torch.equal(back, ref), "dpsgd.layout differs from the flat MLP layout"

    # ---- state conversion ------------------------------------------------------------------
    def _opt_flat(self, net: _Net, spec: OptimizerSpec, opt: Params, batch: bool) -> Params:
        step = opt["step"].clone()
        out = {"step": step if batch else step.reshape(1)}
        for slot in _slots(spec):
            out[slot] = net.flatten(opt, f"{slot}.", batch)
        return out

    def _opt_params(self, net: _Net, opt: Params, batch: bool) -> Params:
        out = {"step": (opt["step"] if batch else opt["step"][0]).clone()}
        for slot, flat in opt.items():
            if slot != "step":
                out.update(net.unflatten(flat, f"{slot}.", batch))
        return out

    def to_flat(self, s: GANState, batch: bool = True) -> FlatState:
        """A stacked state (or, batch=False, one GAN's state as C = 1) as fresh flat buffers."""
        c = self.config
        anchor = bool(c.prox_mu)
        g_opt = self._opt_flat(self.gnet, c.g_opt, s.g_opt, batch)
        d_opt = self._opt_flat(self.dnet, c.d_opt, s.d_opt, batch)
        g, d = self.gnet.flatten(s.g, batch=batch), self.dnet.flatten(s.d, batch=batch)
        return FlatState(
            g,
            d,
            g_opt,
            d_opt,
            self.gnet.flatten(s.g_ema, batch=batch) if s.g_ema else None,
            self.gnet.flatten(s.g_anchor, batch=batch) if anchor and s.g_anchor else None,
            self.dnet.flatten(s.d_anchor, batch=batch) if anchor and s.d_anchor else None,
            s.step,
            all(bool((o["step"] == o["step"][0]).all()) for o in (g_opt, d_opt)),
            # In-place updates keep these views valid for the whole loop.
            self.gnet.layers(g),
            self.dnet.layers(d),
            torch.empty_like(g),
            torch.empty_like(d),
        )

    def to_state(self, f: FlatState, like: GANState, batch: bool = True) -> GANState:
        """A copy of the flat state as a `GANState` (the buffers and anchors from `like`, which
        the step never changes)."""
        return GANState(
            g=self.gnet.unflatten(f.g, batch=batch),
            d=self.dnet.unflatten(f.d, batch=batch),
            d_buf=like.d_buf,
            g_opt=self._opt_params(self.gnet, f.g_opt, batch),
            d_opt=self._opt_params(self.dnet, f.d_opt, batch),
            g_ema=self.gnet.unflatten(f.g_ema, batch=batch) if f.g_ema is not None else {},
            g_anchor=like.g_anchor,
            d_anchor=like.d_anchor,
            step=f.step,
        )

    # ---- one step --------------------------------------------------------------------------
    def _critic_step(
        self,
        f: FlatState,
        real1: Tensor,
        fake1: Tensor,
        eps: Tensor,
        lr_scale: float | Tensor,
        active: Tensor | None,
    ) -> dict[str, Tensor]:
        """`GAN.critic_step` for all clients: [real | 1], [fake | 1] [C, B, d + 1], eps
        [C, B, 1]."""
        c, gp, grad = self.config, self.gp, f.d_grad
        assert grad is not None
        layers = f.d_layers
        b = real1.shape[1]
        parts = [real1, fake1]
        if gp is not None and gp.sampling == "interpolates":
            mix = eps * real1 + (1.0 - eps) * fake1
            mix[..., -1] = 1.0  # exactly 1, not ε + (1 − ε) rounded
            parts.append(mix)
        x1 = torch.cat(parts, dim=1)
        n = x1.shape[1]
        cache = self.dnet.forward(layers, x1, work=f.work, tag="critic")
        v = cache.out[..., 0]
        vr, vf = v[:, :b], v[:, b : 2 * b]
        loss, dvr, dvf = self.critic_terms(vr, vf)
        top = torch.cat([dvr, dvf], dim=1)
        stats = {"d_loss": loss}
        pen_w: list[Tensor] = []
        sources: list[Tensor | None] = []
        if gp is not None:
            r0 = {"real": 0, "fake": b, "interpolates": 2 * b}[gp.sampling]
            pen, pen_w, src = self.dnet.penalty(layers, cache.rows(r0, r0 + b), gp.lam, gp.center)
            stats["penalty"] = pen
            if any(t is not None for t in src):
                # σ'' terms: the penalty's rows join the forward graph's backward.
                top = F.pad(top, (0, n - 2 * b))
                sources = [_at_rows(t, r0, n) for t in src]
        else:
            stats["penalty"] = torch.zeros_like(loss)
        used = cache if top.shape[1] == n else cache.rows(0, top.shape[1])
        self.dnet.backward(layers, used, top.unsqueeze(-1), grad, sources)
        for layer_grad, pw in zip(self.dnet.blocks(grad), pen_w, strict=False):
            layer_grad[..., : pw.shape[-1]] += pw
        if f.d_anchor is not None:
            grad.add_(f.d - f.d_anchor, alpha=c.prox_mu)
        _update(c.d_opt, f.d, grad, f.d_opt, c.d_opt.lr * lr_scale, active, f.uniform)
        if self.clip is not None:
            _put(f.d, f.d.clamp(-self.clip, self.clip), active)
        stats["v_real"] = vr.mean(-1)
        stats["v_fake"] = vf.mean(-1)
        if self.probabilistic:
            stats["d_real"] = torch.sigmoid(vr).mean(-1)
            stats["d_fake"] = torch.sigmoid(vf).mean(-1)
        stats["d_grad_norm"] = grad.square().sum(-1).sqrt()
        return stats

    def dp_gradient(
        self,
        layers: Layers,
        real1: Tensor,
        fake1: Tensor,
        eps: Tensor,
        mask: Tensor,
        grad: Tensor,
        work: Work | None = None,
        per_sample: bool = False,
    ) -> tuple[dict[str, Tensor], Tensor, Tensor | None]:
        """The DP-SGD critic gradient before noise, written into `grad` [C, P]:
        Σ_i mask_i · clip(g_i) / B + the fake terms (`dpsgd.py`), for real rows [real | 1]
        [C, M, d + 1] (`mask` [C, M]: in the batch), [fake | 1] [C, B, d + 1], eps [C, M, 1].
        Returns (statistics [C], per-sample norms ‖g_i‖ [C, M], and with `per_sample` the
        per-sample gradients g_i [C, M, P] in the flat layout — for tests; the step never
        materializes them).

        Ghost clipping: in each layer, real sample i's gradient is a sum of a few rank-1 terms
        U_t[i]ᵀ V_t[i] — the loss backward's δ ⊗ [h | 1] at its row (with the σ'' sources of
        its penalty when the activation is smooth), at its interpolate's row (gradient penalty
        on interpolates, smooth activations), and the penalty's double-backward factors — so
        ‖g_i‖² = Σ_layers Σ_{t,t'} (U_t[i]·U_t'[i]) (V_t[i]·V_t'[i]), and the clipped sum is the
        usual GEMMs with sample i's rows scaled by its clip factor / B."""
        cfg, gp = self.config, self.gp
        assert cfg.dp is not None
        cc, m = real1.shape[:2]
        b = fake1.shape[1]
        sampling = None if gp is None else gp.sampling
        parts = [real1, fake1]
        if sampling == "interpolates":
            fk = fake1 if m == b else fake1[:, torch.arange(m, device=fake1.device) % b]
            mix = eps * real1 + (1.0 - eps) * fk
            mix[..., -1] = 1.0  # exactly 1, not ε + (1 − ε) rounded
            parts.append(mix)
        x1 = torch.cat(parts, dim=1)
        n = x1.shape[1]
        if work is not None:
            _row_views(work, "critic-dp", [ly.w.shape[1] for ly in layers[:-1]], x1)
        cache = self.dnet.forward(layers, x1, work=work, tag="critic-dp")
        v = cache.out[..., 0]
        vr, vf = v[:, :m], v[:, m : m + b]
        # Per sample: L([v_i], [0]) and its derivative (a batch of one: no 1/B); the fake half
        # L([0], v_fake) as a mean over the B fake rows; L([0], [0]) to split the loss stat.
        half, dvr, _ = self.critic_terms(vr.unsqueeze(-1), v.new_zeros(cc, m, 1))
        lf, _, dvf = self.critic_terms(torch.zeros_like(vf), vf)  # (tables take equal widths)
        top = torch.cat([dvr[..., 0], dvf], dim=1)
        maskf = mask.to(v.dtype)
        count = maskf.sum(-1).clamp_min(1.0)
        fake_gw: list[Tensor] = []
        us: list[Tensor] = []
        vs: list[Tensor] = []
        sources: list[Tensor | None] = []
        pv: Tensor | None = None  # per-row penalties
        pen = torch.zeros_like(lf)
        if gp is not None:
            if sampling == "fake":  # no real data: the ordinary penalty, not clipped
                r0 = m
                pen, fake_gw, src = self.dnet.penalty(
                    layers, cache.rows(m, m + b), gp.lam, gp.center
                )
            else:
                r0 = 0 if sampling == "real" else m + b
                pv, us, vs, src = self.dnet.penalty_terms(
                    layers, cache.rows(r0, r0 + m), gp.lam, gp.center, per_row=True
                )
            if any(t is not None for t in src):
                top = F.pad(top, (0, n - top.shape[1]))
                sources = [_at_rows(t, r0, n) for t in src]
        used = cache if top.shape[1] == n else cache.rows(0, top.shape[1])
        deltas = self.dnet.deltas(layers, used, top.unsqueeze(-1), sources)
        mixed = sampling == "interpolates" and bool(sources)  # δ at the interpolates' rows
        hidden = len(layers) - 1
        ins = [used.x, *used.hid1]
        terms: list[list[tuple[Tensor | None, Tensor]]] = []
        sq = v.new_zeros(cc, m)
        for j in range(len(layers)):
            tj: list[tuple[Tensor | None, Tensor]] = [(deltas[j][:, :m], ins[j][:, :m])]
            if mixed:
                tj.append((deltas[j][:, m + b :], ins[j][:, m + b :]))
            if vs:
                tj.append((us[j] if j < hidden else None, vs[j]))
            for t, (ua, va) in enumerate(tj):
                for t2, (ub, vb) in enumerate(tj[t:], start=t):
                    term = _dot(ua, ub) * _dot(va, vb)
                    sq = sq.add_(term, alpha=1.0 if t2 == t else 2.0)
            terms.append(tj)
        norms = sq.clamp_min_(0.0).sqrt_()
        per: Tensor | None = None
        if per_sample:
            per = torch.cat([_outer_sum(tj, self.dnet.shapes[j]) for j, tj in enumerate(terms)], -1)
        over = norms > cfg.dp.clip
        # min(1, C/‖g_i‖) (1 at ‖g_i‖ = 0), 0 off the batch, / B: each real row's scale.
        w = (cfg.dp.clip / norms).clamp_(max=1.0).mul_(maskf)
        scale = w.mul_(1.0 / cfg.batch_size).unsqueeze(-1)
        blocks = self.dnet.blocks(grad)
        for j, block in enumerate(blocks):
            dj = deltas[j]
            dj[:, :m] *= scale
            if mixed:
                dj[:, m + b :] *= scale
            _mm_into(dj.mT, ins[j], block)
            if vs:
                vj = vs[j] * scale
                gw = _mm(us[j].mT, vj) if j < hidden else vj.sum(1, keepdim=True)
                block[..., : gw.shape[-1]] += gw
        for block, pw in zip(blocks, fake_gw, strict=False):
            block[..., : pw.shape[-1]] += pw
        # Means over the realized batch, in one reduction: the real half of the loss (less its
        # constant L([0], [0])), v, the share clipped, (σ(v)), (the per-row penalty).
        rows = [half - self.dp_l0, vr, over.to(v.dtype)]
        if self.probabilistic:
            rows.append(torch.sigmoid(vr))
        if pv is not None:
            rows.append(pv)
        means = (torch.stack(rows) * maskf).sum(-1) / count
        stats = {
            "d_loss": means[0] + lf,
            "penalty": means[4 if self.probabilistic else 3] if pv is not None else pen,
            "v_real": means[1],
            "v_fake": vf.mean(-1),
        }
        if self.probabilistic:
            stats["d_real"] = means[3]
            stats["d_fake"] = torch.sigmoid(vf).mean(-1)
        stats["dp_clipped_fraction"] = means[2]
        return stats, norms, per

    def _critic_step_dp(
        self,
        f: FlatState,
        real1: Tensor,
        fake1: Tensor,
        eps: Tensor,
        mask: Tensor,
        noise: Tensor,
        lr_scale: float | Tensor,
        active: Tensor | None,
    ) -> dict[str, Tensor]:
        """`_critic_step` under DP-SGD: real rows [C, M, d + 1] with `mask` [C, M], `noise`
        [C, P] standard normals (`dpsgd.layout` order: the flat layout)."""
        c, grad = self.config, f.d_grad
        assert grad is not None and c.dp is not None
        stats, _, _ = self.dp_gradient(f.d_layers, real1, fake1, eps, mask, grad, f.work)
        std = c.dp.noise_std
        if std:  # dp_noise is in the flat layout already (`dpsgd.layout`)
            grad.add_(noise, alpha=std / c.batch_size)
        if f.d_anchor is not None:
            grad.add_(f.d - f.d_anchor, alpha=c.prox_mu)
        _update(c.d_opt, f.d, grad, f.d_opt, c.d_opt.lr * lr_scale, active, f.uniform)
        if self.clip is not None:
            _put(f.d, f.d.clamp(-self.clip, self.clip), active)
        stats["d_grad_norm"] = grad.square().sum(-1).sqrt()
        return stats

    def _generator_step(
        self, f: FlatState, gc: _Cache, lr_scale: float | Tensor, active: Tensor | None
    ) -> dict[str, Tensor]:
        """`GAN.generator_step` for all clients, from the generator's forward pass `gc`."""
        c, grad = self.config, f.g_grad
        assert grad is not None and gc.out1 is not None
        dc = self.dnet.forward(f.d_layers, gc.out1, work=f.work, tag="critic-g")
        v = dc.out[..., 0]
        loss, dv = self.gen_terms(v)
        x_bar = self.dnet.backward(f.d_layers, dc, dv.unsqueeze(-1))
        assert x_bar is not None
        self.gnet.backward(f.g_layers, gc, x_bar, grad)
        if f.g_anchor is not None:
            grad.add_(f.g - f.g_anchor, alpha=c.prox_mu)
        _update(c.g_opt, f.g, grad, f.g_opt, c.g_opt.lr * lr_scale, active, f.uniform)
        if c.ema and f.g_ema is not None:
            _put(f.g_ema, c.ema * f.g_ema + (1 - c.ema) * f.g, active)
        stats = {"g_loss": loss}
        if self.probabilistic:
            stats["d_fake_g"] = torch.sigmoid(v).mean(-1)
        stats["g_grad_norm"] = grad.square().sum(-1).sqrt()
        return stats

    def step(
        self,
        f: FlatState,
        data: Tensor,
        noise: StepNoise,
        lr_scale: float | Tensor = 1.0,
        active: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """`GAN.step` for all clients, in place on `f`: data [C, N, d]; noise with a leading
        client axis (idx [C, n_critic, B], z_d [C, n_critic, B, latent], z_g [C, B, latent], eps
        [C, n_critic, B, 1]); lr_scale a float or [C]; clients not `active` [C] keep their
        state. Returns each statistic [C]."""
        self.bind(f, data)
        stats = self.update(f, noise, lr_scale, active)
        f.step += 1
        return stats

    def bind(self, f: FlatState, data: Tensor) -> None:
        """Give `f` the data [C, N, d] with its ones column (once per loop, not per step)."""
        if f.data is not data:
            f.data, f.data1 = data, augment(data)
            f.rows = torch.arange(data.shape[0], device=data.device).unsqueeze(-1)

    def update(
        self,
        f: FlatState,
        noise: StepNoise,
        lr_scale: float | Tensor = 1.0,
        active: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """`step` on the data already in `f`, without advancing the Python step counter:
        tensors only (`torch.compile` would otherwise recompile for every counter value) —
        except under DP-SGD on the CPU, where each critic step reads its largest batch size."""
        assert f.data1 is not None and f.rows is not None
        nc, b = self.config.n_critic, noise.z_g.shape[1]
        # Every critic update of the step samples the same generator, and so does the generator
        # update: one forward pass over all their latents, the last B rows kept for its backward.
        z1 = augment(torch.cat([noise.z_d.flatten(1, 2), noise.z_g], dim=1))
        gc = self.gnet.forward(f.g_layers, z1, ones_out=True, work=f.work, tag="generator")
        assert gc.out1 is not None
        acc: dict[str, Tensor] = {}
        for i in range(nc):
            fake1 = gc.out1[:, i * b : (i + 1) * b]
            if self.dp is not None:
                assert noise.mask is not None and noise.dp_noise is not None
                idx, mask, eps = noise.idx[:, i], noise.mask[:, i], noise.eps[:, i]
                if mask.device.type == "cpu":
                    # The block's M rows hold its largest batch; this step needs the columns
                    # up to its own largest (the mask is a prefix). A host read: CPU only.
                    m = max(int(mask.sum(-1).max()), 1)
                    idx, mask, eps = idx[:, :m], mask[:, :m], eps[:, :m]
                real1 = f.data1[f.rows, idx]
                z = noise.dp_noise[:, i]
                st = self._critic_step_dp(f, real1, fake1, eps, mask, z, lr_scale, active)
            else:
                real1 = f.data1[f.rows, noise.idx[:, i]]
                st = self._critic_step(f, real1, fake1, noise.eps[:, i], lr_scale, active)
            acc = st if not acc else {k: acc[k] + st[k] for k in acc}
        stats = {k: v / nc for k, v in acc.items()} if nc > 1 else acc
        stats.update(self._generator_step(f, gc.rows(nc * b, (nc + 1) * b), lr_scale, active))
        return stats

    # ---- a critic alone (server-held generators) -------------------------------------------
    def critic_flat(self, d: Params, d_opt: Params) -> FlatState:
        """Stacked critics d [C, ...] and their optimizer state as flat buffers, without a
        generator (the server holds it): for `critic_steps_on` and the answers below."""
        flat = self.dnet.flatten(d)
        opt = self._opt_flat(self.dnet, self.config.d_opt, d_opt, True)
        none = flat.new_zeros(flat.shape[0], 0)
        return FlatState(
            g=none,
            d=flat,
            g_opt={},
            d_opt=opt,
            g_ema=None,
            g_anchor=None,
            d_anchor=None,
            step=0,
            uniform=bool((opt["step"] == opt["step"][0]).all()),
            d_layers=self.dnet.layers(flat),
            d_grad=torch.empty_like(flat),
        )

    def critic_params(self, f: FlatState) -> tuple[Params, Params]:
        """Copies of the stacked critics and their optimizer state from `critic_flat`'s `f`."""
        return self.dnet.unflatten(f.d), self._opt_params(self.dnet, f.d_opt, True)

    def critic_steps_on(
        self,
        f: FlatState,
        reals: Tensor,
        fakes: Tensor,
        eps: Tensor,
        lr_scale: float = 1.0,
        masks: Tensor | None = None,
        dp_noise: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """`split.critic_steps` for all clients, in place on `f`: reals, fakes [C, n_critic, B,
        d] (the batches each client was sent), eps [C, n_critic, B, 1]. Statistics [C], means
        over the steps. Under DP-SGD: reals [C, n_critic, M, d], eps [C, n_critic, M, 1],
        masks [C, n_critic, M] (None: all rows) and dp_noise [C, n_critic, P] (required)."""
        nc = fakes.shape[1]
        acc: dict[str, Tensor] = {}
        for i in range(nc):
            real1, fake1 = augment(reals[:, i]), augment(fakes[:, i])
            if self.dp is not None:
                if dp_noise is None:
                    raise ValueError("gan.dp is set: critic steps need their dp_noise [C, nc, P]")
                mask = (
                    torch.ones(real1.shape[:2], dtype=torch.bool, device=real1.device)
                    if masks is None
                    else masks[:, i]
                )
                st = self._critic_step_dp(
                    f, real1, fake1, eps[:, i], mask, dp_noise[:, i], lr_scale, None
                )
            else:
                st = self._critic_step(f, real1, fake1, eps[:, i], lr_scale, None)
            acc = st if not acc else {k: acc[k] + st[k] for k in acc}
        return {k: v / nc for k, v in acc.items()}

    def generator_feedback(self, f: FlatState, x: Tensor) -> tuple[Tensor, Tensor]:
        """`split.mdgan_feedback` for all clients: e = ∂L_G/∂x [C, B, d] of each client's
        critic on its x [C, B, d], and L_G [C]."""
        cache = self.dnet.forward(f.d_layers, augment(x))
        loss, dv = self.gen_terms(cache.out[..., 0])
        e = self.dnet.backward(f.d_layers, cache, dv.unsqueeze(-1))
        assert e is not None
        return e, loss

    def logits_and_input_grads(self, f: FlatState, x: Tensor) -> tuple[Tensor, Tensor]:
        """`split.uagan_answer` for all clients: logits l(x) [C, B] and ∇ₓ l [C, B, d]."""
        cache = self.dnet.forward(f.d_layers, augment(x))
        logits = cache.out[..., 0].clone()
        grads = self.dnet.backward(f.d_layers, cache, torch.ones_like(cache.out))
        assert grads is not None
        return logits, grads

    # ---- diagnostics -----------------------------------------------------------------------
    def lipschitz(
        self, g: Params, d: Params, real: Tensor, z: Tensor, eps: Tensor
    ) -> dict[str, Tensor]:
        """`diagnostics.lipschitz_tensors` for stacked clients: the largest input-gradient norm
        of the critic on real [C, n, d], G(z) (z [C, n, latent]) and their interpolates (eps
        [C, n, 1]), and the product of the layers' spectral norms; each key → [C]."""
        with torch.no_grad():
            fake = self.gnet.forward(self.gnet.layers(self.gnet.flatten(g)), augment(z)).out
            layers = self.dnet.layers(self.dnet.flatten(d))
            x = torch.cat([real, fake, eps * real + (1.0 - eps) * fake], dim=1)
            cache = self.dnet.forward(layers, augment(x))
            ones = torch.ones_like(cache.out)
            grad = self.dnet.backward(layers, cache, ones)
            assert grad is not None
            norms = grad.flatten(2).norm(dim=-1).unflatten(1, (3, -1)).amax(-1)  # [C, 3]
            product = torch.ones_like(norms[:, 0])
            for layer in layers:
                # As `layer_spectral_norm_tensors`: NaN for a diverged client, not an error.
                w = layer.w
                finite = torch.isfinite(w).flatten(1).all(-1)
                clean = torch.where(finite[:, None, None], w, torch.zeros_like(w))
                sigma = torch.linalg.matrix_norm(clean, ord=2)
                product = product * torch.where(finite, sigma, torch.full_like(sigma, math.nan))
        return {
            "real": norms[:, 0],
            "fake": norms[:, 1],
            "interpolates": norms[:, 2],
            "layer_product": product,
            "bound": product,
        }


def _row_views(work: Work, tag: str, widths: list[int], like: Tensor) -> None:
    """Under DP-SGD the real batch's rows change from step to step: give the forward pass of
    `tag` its [C, R, width + 1] output buffers as the first R rows of buffers kept at the
    largest R seen (their ones columns filled once), instead of a new buffer per size."""
    c, r = like.shape[:2]
    for j, width in enumerate(widths):
        for key in [k for k in work if k[0] == tag and k[1] == j and k[2] != r]:
            del work[key]
        full = work.get((tag + "/capacity", j, 0))
        if full is None or full.shape[0] != c or full.shape[1] < r or full.shape[2] != width + 1:
            full = like.new_empty(c, r, width + 1)
            full[..., width] = 1.0
            work[(tag + "/capacity", j, 0)] = full
        work[(tag, j, r)] = full[:, :r]


def _dot(a: Tensor | None, b: Tensor | None) -> Tensor:
    """Row-wise dot products of two factors [C, R, k] (k may differ: the shorter one's missing
    columns are zero — a penalty factor has no bias column); None is the scalar factor 1 of a
    one-output layer (the penalty's u of the last layer)."""
    if a is None and b is None:
        return torch.ones((), dtype=torch.get_default_dtype())
    if a is None or b is None:
        t = a if b is None else b
        assert t is not None and t.shape[-1] == 1
        return t[..., 0]
    k = min(a.shape[-1], b.shape[-1])
    return (a[..., :k] * b[..., :k]).sum(-1)


def _outer_sum(terms: list[tuple[Tensor | None, Tensor]], shape: tuple[int, int]) -> Tensor:
    """Σ_t U_t[i]ᵀ V_t[i] per row i: a layer's per-sample gradients [C, R, out·(in + 1)]."""
    o, i = shape
    total: Tensor | None = None
    for u, v in terms:
        v = F.pad(v, (0, i + 1 - v.shape[-1]))
        outer = v.unsqueeze(-2) if u is None else u.unsqueeze(-1) * v.unsqueeze(-2)
        outer = outer.expand(*v.shape[:2], o, i + 1)
        total = outer if total is None else total + outer
    assert total is not None
    return total.flatten(-2)


def _at_rows(t: Tensor | None, r0: int, n: int) -> Tensor | None:
    """t [C, R, w] placed at rows r0.. of a zero [C, n, w] (None stays None)."""
    if t is None:
        return None
    return F.pad(t, (0, 0, r0, n - r0 - t.shape[1]))


# ---- when it applies ----------------------------------------------------------------------------


CONTROLS = (
    lipschitz.LipschitzControl,
    lipschitz.WeightClip,
    lipschitz.GradientPenalty,
    lipschitz.R1,
)
"""The Lipschitz controls the hand-batched step computes (by exact type: a plug-in or subclass
may change what `penalty` or `project` do, so it takes the vmap path)."""


def why_not(gan: GAN) -> str | None:
    """None if the hand-batched step covers this GAN, else what it does not cover."""
    if not ENABLED:
        return "disabled (FEDGAN_FAST_MLP=0)"
    c = gan.config
    if getattr(gan, "condition", None) is not None:
        return "conditional GAN (the latent's condition coordinate → one-hot c is not hand-batched)"
    if getattr(gan, "heads", None) is not None:
        return "generator has output heads (a mixed-type table's softmax spans)"
    for name, module, cls in (
        ("generator", gan.generator, MLPGenerator),
        ("critic", gan.critic, MLPCritic),
    ):
        if type(module) is not cls:
            return f"{name} is a {type(module).__name__}, not a plain MLP"
        if list(module.buffers()):
            return f"{name} has buffers (spectral norm)"
        seq = list(module.net)
        spec = c.generator if name == "generator" else c.critic
        tail = 1 if name == "generator" and spec.output == "tanh" else 0
        body = seq[: len(seq) - tail]
        if tail and type(seq[-1]) is not nn.Tanh:
            return f"{name} output is not tanh"
        linears, acts = body[0::2], body[1::2]
        if not all(type(m) is nn.Linear for m in linears) or len(acts) != len(linears) - 1:
            return f"{name} is not linear layers with activations between them"
        if any(_act_name(m) != spec.activation for m in acts):
            return f"{name} activation {spec.activation!r} is not covered"
        if name == "critic" and linears[-1].out_features != 1:
            return "critic has more than one output"
    if type(gan.objective) not in CRITIC_TERMS:
        return f"objective {type(gan.objective).__name__} is not a built-in one"
    if type(gan.control) not in CONTROLS:
        return f"Lipschitz control {gan.control.name!r} is not covered"
    for opt in (c.g_opt, c.d_opt):
        if opt.name not in SLOTS:
            return f"optimizer {opt.name!r} is not covered"
    return None


def plan(gan: GAN) -> FastMLP | None:
    """The hand-batched step for `gan`, or None where it does not apply (see `why_not`)."""
    if why_not(gan) is not None:
        return None
    keep_freed_memory()
    return FastMLP(gan)


def train_one(
    fast: FastMLP,
    s: GANState,
    data: Tensor,
    n_steps: int,
    gen: torch.Generator,
    total: int,
    callback: Callable[[GANState, dict[str, float]], None] | None = None,
) -> tuple[GANState, list[dict[str, float]]]:
    """`GAN.train` of one GAN (data [N, d]) on the hand-batched step, as a batch of one: the same
    noise blocks, schedule and per-step statistics."""
    gan = fast.gan
    f = fast.to_flat(s, batch=False)
    x = data.unsqueeze(0)
    history: list[dict[str, float]] = []
    for block in draw_blocks(n_steps):
        noise = gan.draw_steps(data.shape[0], gen, block)
        for t in range(block):
            one = noise.map(lambda _, v: v[t : t + 1])  # noqa: B023 (used at once)
            st = fast.step(f, x, one, gan.config.lr_scale(f.step, total))
            # One host conversion for all statistics, not one per value.
            row = dict(zip(st, torch.cat(list(st.values())).tolist(), strict=True))
            history.append(row)
            if callback is not None:
                callback(fast.to_state(f, s, batch=False), row)
    return fast.to_state(f, s, batch=False), history
