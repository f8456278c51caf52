"""Diagnostics of GAN failure mechanisms: vanishing generator gradients, Jensen–Shannon
saturation, Lipschitz constants, weight-clipping pile-up and rotation in the game dynamics.

Everything here is a pure function of a `GAN` (the templates and the losses) and a `GANState`
(the tensors): nothing is trained and no module is modified. Results are small frozen
dataclasses of floats and numpy arrays, so they can be logged or compared directly.

The Dirac-GAN helpers (`dirac_gan`) build the one-dimensional example of Mescheder et al.
2018: the generator is a learnable point θ ∈ ℝ, the critic is linear, v(x) = ψ·x, and the real
data sit at 0. Its game Jacobians are known in closed form, which makes it the reference case
for `game_jacobian`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from fedgan.simulator.gan import fastmlp
from fedgan.simulator.gan.lipschitz import input_gradients
from fedgan.simulator.gan.networks import (
    NetworkSpec,
    TwoBranchCritic,
    layer_spectral_norm_tensors,
    layer_spectral_norms,
)
from fedgan.simulator.gan.optim import OptimizerSpec
from fedgan.simulator.gan.train import GAN, GANConfig, GANState
from torch import Tensor, nn

Params = dict[str, Tensor]

LN2 = math.log(2.0)


# ---- generator gradients ------------------------------------------------------------------------


@dataclass(frozen=True)
class GradientProfile:
    """Per-sample view of the generator's learning signal on one batch of B latent codes.

    Attributes
    ----------
    v : np.ndarray, shape [B]
        Raw critic outputs v(G(z)).
    d : np.ndarray, shape [B]
        D(G(z)) = sigmoid(v) for probabilistic objectives, else v itself.
    logit_grad : np.ndarray, shape [B]
        ∂ℓ/∂v of the per-sample generator loss ℓ(v) (the batch loss is the mean of ℓ, so this
        is B·∂L_G/∂vᵢ): −D for the saturating loss, −(1 − D) for the non-saturating one.
    param_grad_norm : np.ndarray, shape [B]
        ‖∇_θg ℓ(v(G(zᵢ)))‖₂ per sample.
    batch_grad_norm : float
        ‖mean of the per-sample parameter gradients‖₂: the norm of the gradient the
        optimizer sees (without the proximal term).
    """

    v: np.ndarray
    d: np.ndarray
    logit_grad: np.ndarray
    param_grad_norm: np.ndarray
    batch_grad_norm: float

    def summary(self) -> dict[str, float]:
        """Means and (population, ddof=0) variances of `d`, `logit_grad`, `param_grad_norm`."""
        out: dict[str, float] = {}
        for name in ("d", "logit_grad", "param_grad_norm"):
            arr = getattr(self, name)
            out[f"{name}_mean"] = float(np.mean(arr))
            out[f"{name}_var"] = float(np.var(arr))
        out["batch_grad_norm"] = self.batch_grad_norm
        return out


def _to_numpy(t: Tensor) -> np.ndarray:
    return t.detach().cpu().double().numpy()


def generator_gradient_profile(
    gan: GAN,
    state: GANState,
    z: Tensor,
    method: Literal["vmap", "loop"] = "vmap",
) -> GradientProfile:
    """Per-sample generator gradients at the logit and at the parameters.

    Only the objective's generator loss is differentiated (no proximal term): this is the
    learning signal the critic hands the generator, e.g. |∂ℓ/∂v| = D → 0 for the saturating
    loss when the critic wins, while the non-saturating 1 − D → 1.

    Parameters
    ----------
    gan, state
        The GAN and its tensors; the critic is used as is (its spectral-norm vectors are not
        advanced), the generator is `state.g` (not the EMA).
    z : Tensor, shape [B, latent]
        Latent codes.
    method
        'vmap' (`torch.func.vmap` over `torch.func.grad`) or 'loop' (one `grad` per sample,
        slower; for modules that do not vmap).

    Returns
    -------
    GradientProfile
        Arrays of shape [B] and their summary; see `GradientProfile`.
    """
    obj = gan.objective

    def sample_loss(g: Params, zi: Tensor) -> Tensor:
        # One sample as a batch of one: for losses that are means over the batch this is the
        # per-sample term ℓ, whatever the objective (no per-objective formulas needed).
        v = gan.D(state.d, state.d_buf, gan.G(g, zi.unsqueeze(0)))
        return obj.generator_loss(v)

    def logit_loss(vi: Tensor) -> Tensor:
        return obj.generator_loss(vi.reshape(1))

    v = gan.D(state.d, state.d_buf, gan.G(state.g, z)).detach()
    grad_fn = torch.func.grad(sample_loss)
    if method == "vmap":
        logit_grad = torch.func.vmap(torch.func.grad(logit_loss))(v)
        grads = torch.func.vmap(grad_fn, in_dims=(None, 0))(state.g, z)
    elif method == "loop":
        logit_grad = torch.stack([torch.func.grad(logit_loss)(vi) for vi in v])
        per = [grad_fn(state.g, zi) for zi in z]
        grads = {k: torch.stack([p[k] for p in per]) for k in state.g}
    else:
        raise ValueError(f"unknown method {method!r}; allowed: vmap, loop")

    flat = torch.cat([g.detach().reshape(g.shape[0], -1) for g in grads.values()], dim=1)  # [B, n]
    d = torch.sigmoid(v) if obj.probabilistic else v
    return GradientProfile(
        v=_to_numpy(v),
        d=_to_numpy(d),
        logit_grad=_to_numpy(logit_grad),
        param_grad_norm=_to_numpy(flat.norm(dim=1)),
        batch_grad_norm=float(flat.mean(dim=0).norm()),
    )


# ---- Jensen–Shannon --------------------------------------------------------------------------


@dataclass(frozen=True)
class JSEstimate:
    """`js` = clip(`raw`, 0, ln 2), in nats; `raw` = ln 2 − L/2."""

    js: float
    raw: float


def js_estimate(critic_loss_value: float | Tensor) -> JSEstimate:
    """Jensen–Shannon divergence estimated from the standard (probabilistic) critic loss.

    With L = −E_p log D(x) − E_q log(1 − D(x)), the optimal D* = p/(p + q) gives
    L* = 2 ln 2 − 2 JS(p‖q), so JS ≈ ln 2 − L/2. Any other D has a larger loss, so the
    estimate is a lower bound on JS (up to batch noise) and tight only near the optimal
    critic: read it as "the JS the current critic can see". The raw value is negative when
    the critic is worse than the constant D = ½ (L > 2 ln 2), hence the clip to [0, ln 2].

    Parameters
    ----------
    critic_loss_value
        The critic loss of a `probabilistic` objective without penalties (`d_loss` in the
        training statistics), a scalar.
    """
    raw = LN2 - 0.5 * float(critic_loss_value)
    return JSEstimate(js=min(max(raw, 0.0), LN2), raw=raw)


# ---- Lipschitz constants ----------------------------------------------------------------------


@dataclass(frozen=True)
class LipschitzEstimates:
    """Empirical and structural Lipschitz estimates of a critic.

    Attributes
    ----------
    real, fake, interpolates : float
        Largest ‖∇ₓ v(x)‖₂ over the given real points, fake points and interpolates: lower
        bounds on the Lipschitz constant.
    layer_norms : tuple[float, ...]
        Spectral norm of every linear/conv layer (effective W/σ̂ for spectrally normalized
        layers), in module order.
    layer_product : float
        Product of `layer_norms`: an upper bound for a chain of layers with 1-Lipschitz
        activations, *not* for parallel branches.
    bound : float
        Structural upper bound: `layer_product` for chains, the sum of the per-branch products
        for a `TwoBranchCritic` (each branch bounded by its own product, the sum by the sum).
    """

    real: float
    fake: float
    interpolates: float
    layer_norms: tuple[float, ...]
    layer_product: float
    bound: float


def _max_grad_norm(critic: Callable[[Tensor], Tensor], x: Tensor) -> float:
    g = input_gradients(critic, x).detach().flatten(1)
    return float(g.norm(dim=1).max())


def _sub_params(params: Mapping[str, Tensor], prefix: str) -> Params:
    return {k[len(prefix) :]: v for k, v in params.items() if k.startswith(prefix)}


LIPSCHITZ_KEYS = ("real", "fake", "interpolates", "layer_product", "bound")


def lipschitz_metrics(
    gan: GAN, state: GANState, data: Tensor, gen: torch.Generator, n: int = 256
) -> dict[str, float]:
    """`lipschitz_estimates` on n points of `data` [N, d] and n fresh samples, as metrics
    (`lipschitz.real`, `.fake`, `.interpolates`, `.layer_product`, `.bound`)."""
    idx, z, eps = lipschitz_draw(gan, data.shape[0], gen, n)
    fast = fastmlp.plan(gan)
    if fast is not None:  # MLPs: the hand-written forward and input gradient, a batch of one
        one = fast.lipschitz(
            {k: v[None] for k, v in state.g.items()},
            {k: v[None] for k, v in state.d.items()},
            data[idx][None],
            z[None],
            eps[None],
        )
        return {f"lipschitz.{k}": float(v[0]) for k, v in one.items()}
    fake = gan.G(state.g, z).detach()
    est = lipschitz_tensors(gan, state.d, state.d_buf, data[idx], fake, eps)
    return {f"lipschitz.{k}": float(v) for k, v in est.items()}


def lipschitz_draw(
    gan: GAN, n_data: int, gen: torch.Generator, n: int = 256
) -> tuple[Tensor, Tensor, Tensor]:
    """The randomness of `lipschitz_metrics`: data indices [n], latent codes [n, latent] and
    interpolation weights [n, 1], in the order drawn from `gen` (batched code draws the same)."""
    idx = torch.randint(n_data, (n,), generator=gen)
    z = torch.randn(n, gan.config.latent_dim, generator=gen)
    return idx, z, torch.rand(n, 1, generator=gen)


def lipschitz_tensors(
    gan: GAN, d: Params, d_buf: Params, real: Tensor, fake: Tensor, eps: Tensor
) -> dict[str, Tensor]:
    """The `LIPSCHITZ_KEYS` estimates as 0-d tensors: a pure function of the critic's tensors,
    so `torch.func.vmap` runs it over stacked clients."""

    def critic(x: Tensor) -> Tensor:
        return gan.D(d, d_buf, x)

    def max_norm(x: Tensor) -> Tensor:
        return input_gradients(critic, x).detach().flatten(1).norm(dim=1).max()

    one = real.new_ones(())
    norms = layer_spectral_norm_tensors(gan.critic, d, d_buf)
    product = _prod(norms, one)
    bound = product
    if isinstance(gan.critic, TwoBranchCritic):
        bound = real.new_zeros(())
        for name, branch in (("branch_a", gan.critic.branch_a), ("branch_b", gan.critic.branch_b)):
            p = _sub_params(d, f"{name}.")
            b = _sub_params(d_buf, f"{name}.")
            bound = bound + _prod(layer_spectral_norm_tensors(branch, p, b), one)
    return {
        "real": max_norm(real),
        "fake": max_norm(fake),
        "interpolates": max_norm(eps * real + (1.0 - eps) * fake),
        "layer_product": product,
        "bound": bound,
    }


def _prod(values: list[Tensor], one: Tensor) -> Tensor:
    out = one
    for v in values:
        out = out * v
    return out


def lipschitz_estimates(
    gan: GAN, state: GANState, real: Tensor, fake: Tensor, eps: Tensor | float
) -> LipschitzEstimates:
    """Input-gradient norms on real, fake and interpolated points, and layer spectral norms.

    Parameters
    ----------
    real, fake : Tensor, shape [B, d]
    eps : Tensor of shape [B, 1] or float
        Interpolation weights: x̂ = ε·real + (1 − ε)·fake.
    """

    def critic(x: Tensor) -> Tensor:
        return gan.D(state.d, state.d_buf, x)

    inter = eps * real + (1.0 - eps) * fake
    norms = layer_spectral_norms(gan.critic, state.d, state.d_buf)
    product = float(np.prod(norms)) if norms else 1.0
    bound = product
    if isinstance(gan.critic, TwoBranchCritic):
        bound = 0.0
        for name, branch in (("branch_a", gan.critic.branch_a), ("branch_b", gan.critic.branch_b)):
            p = _sub_params(state.d, f"{name}.")
            b = _sub_params(state.d_buf, f"{name}.")
            bound += float(np.prod(layer_spectral_norms(branch, p, b)))
    return LipschitzEstimates(
        real=_max_grad_norm(critic, real),
        fake=_max_grad_norm(critic, fake),
        interpolates=_max_grad_norm(critic, inter),
        layer_norms=tuple(norms),
        layer_product=product,
        bound=bound,
    )


# ---- weight clipping ---------------------------------------------------------------------------


def clip_saturation(params: Mapping[str, Tensor], c: float, rtol: float = 1e-3) -> float:
    """Share of all parameter entries with |w| ≥ c·(1 − rtol).

    Under weight clipping at ±c a critic that wants to be steeper than the box allows piles its
    weights up at the box edges (Arjovsky et al. 2017; Gulrajani et al. 2017, fig. 1b); this
    is the fraction of entries sitting there. `rtol` absorbs float rounding of the clamp.
    """
    if not c > 0:
        raise ValueError(f"c must be > 0, got {c}")
    threshold = c * (1.0 - rtol)
    total = sum(p.numel() for p in params.values())
    if total == 0:
        raise ValueError("clip_saturation needs at least one parameter entry")
    at_edge = sum(int((p.detach().abs() >= threshold).sum()) for p in params.values())
    return at_edge / total


# ---- game Jacobian -----------------------------------------------------------------------------


@dataclass(frozen=True)
class GameJacobian:
    """Jacobian J = ∂ξ/∂θ of the simultaneous-gradient field ξ = (∇_θg L_G, ∇_θd L_D).

    θ = (θ_g, θ_d) flattened, generator first. Simultaneous gradient descent is
    θ ← θ − η ξ(θ); near a stationary point its continuous-time flow θ̇ = −ξ has Jacobian −J.

    Attributes
    ----------
    jacobian : np.ndarray, shape [n, n]
    eigenvalues : np.ndarray (complex), shape [n]
        Eigenvalues of J (not of −J).
    field : np.ndarray, shape [n]
        ξ at the point (zero at a stationary point).
    layout : tuple[tuple[str, int], ...]
        ('generator.<name>' or 'critic.<name>', number of entries) in the order of θ.
    n_generator, n_critic : int
    """

    jacobian: np.ndarray
    eigenvalues: np.ndarray
    field: np.ndarray
    layout: tuple[tuple[str, int], ...]
    n_generator: int
    n_critic: int

    @property
    def max_abs_imag(self) -> float:
        """Largest |Im λ|: a large imaginary part means rotation around the equilibrium."""
        return float(np.abs(self.eigenvalues.imag).max())

    @property
    def max_real(self) -> float:
        """Largest Re λ of J."""
        return float(self.eigenvalues.real.max())

    @property
    def flow_max_real(self) -> float:
        """Largest Re λ of the flow Jacobian −J (= −min Re λ(J)).

        < 0: every mode is damped (locally attracting); ≈ 0 with a large `max_abs_imag`:
        undamped rotation (e.g. the unregularized Dirac-GAN); > 0: some mode diverges.
        """
        return float(-self.eigenvalues.real.min()) + 0.0  # + 0.0 turns −0.0 into 0.0

    def gd_spectral_radius(self, lr: float) -> float:
        """Spectral radius of I − lr·J, the linearized simultaneous gradient-descent step.

        > 1 means the discrete iteration diverges locally; a pure rotation λ = ±iω gives
        √(1 + lr²ω²) > 1 for every lr > 0.
        """
        return float(np.abs(1.0 - lr * self.eigenvalues).max())

    def summary(self) -> dict[str, float]:
        return {
            "max_abs_imag": self.max_abs_imag,
            "max_real": self.max_real,
            "flow_max_real": self.flow_max_real,
        }


def _prox(params: Params, anchor: Params, mu: float) -> Tensor:
    # Same term as the training step's FedProx penalty μ/2‖θ − θ_anchor‖² (train.py keeps its
    # own helper private).
    total = next(iter(params.values())).new_zeros(())
    if not mu or not anchor:
        return total
    for k, p in params.items():
        total = total + ((p - anchor[k]) ** 2).sum()
    return 0.5 * mu * total


def game_jacobian(
    gan: GAN,
    state: GANState,
    real: Tensor,
    z: Tensor,
    eps: Tensor | None = None,
    max_params: int = 5000,
    include_penalty: bool = True,
    dtype: torch.dtype = torch.float64,
) -> GameJacobian:
    """Jacobian of the game's gradient field on fixed batches, and its eigenvalues.

    L_D is the critic's full training loss on (real, G(z)) — objective, Lipschitz penalty
    (if `include_penalty`) and proximal term — but, unlike the training step, G(z) is *not*
    detached: its dependence on θ_g is the off-diagonal block ∂ξ_d/∂θ_g. L_G is the
    generator loss plus its proximal term. Weight clipping (a projection, not a gradient) and
    the spectral-norm power iteration (u is held at `state.d_buf`) are not part of ξ.

    Parameters
    ----------
    real : Tensor, shape [B, d]
    z : Tensor, shape [B, latent]
    eps : Tensor, shape [B, 1], optional
        Gradient-penalty interpolation weights; default ½ everywhere (deterministic).
    max_params : int
        Refuse (ValueError) above this many parameters: J is dense, n × n.
    dtype
        Computation dtype; float64 by default so that eigenvalues of small models are exact to
        many digits.

    Returns
    -------
    GameJacobian
    """
    n_g = sum(p.numel() for p in state.g.values())
    n_d = sum(p.numel() for p in state.d.values())
    n = n_g + n_d
    if n > max_params:
        raise ValueError(
            f"game_jacobian builds a dense {n}×{n} Jacobian ({n_g} generator + {n_d} critic "
            f"parameters), above max_params={max_params}; use a smaller model or raise the limit"
        )

    def cast(group: Mapping[str, Tensor]) -> Params:
        return {k: v.detach().to(dtype) for k, v in group.items()}

    g0, d0, buf = cast(state.g), cast(state.d), cast(state.d_buf)
    g_anchor, d_anchor = cast(state.g_anchor), cast(state.d_anchor)
    real, z = real.to(dtype), z.to(dtype)
    eps_t = (eps if eps is not None else real.new_full((real.shape[0], 1), 0.5)).to(dtype)
    mu = gan.config.prox_mu
    layout = tuple(
        [(f"generator.{k}", v.numel()) for k, v in g0.items()]
        + [(f"critic.{k}", v.numel()) for k, v in d0.items()]
    )
    shapes = [v.shape for v in g0.values()] + [v.shape for v in d0.values()]
    names_g, names_d = list(g0), list(d0)

    def unflatten(theta: Tensor) -> tuple[Params, Params]:
        parts = torch.split(theta, [size for _, size in layout])
        tensors = [p.reshape(s) for p, s in zip(parts, shapes, strict=True)]
        return (
            dict(zip(names_g, tensors[: len(names_g)], strict=True)),
            dict(zip(names_d, tensors[len(names_g) :], strict=True)),
        )

    def loss_g(g: Params, d: Params) -> Tensor:
        v_fake = gan.D(d, buf, gan.G(g, z))
        return gan.objective.generator_loss(v_fake) + _prox(g, g_anchor, mu)

    def loss_d(d: Params, g: Params) -> Tensor:
        fake = gan.G(g, z)
        loss = gan.objective.critic_loss(gan.D(d, buf, real), gan.D(d, buf, fake))
        if include_penalty:
            loss = loss + gan.control.penalty(lambda x: gan.D(d, buf, x), real, fake, eps_t)
        return loss + _prox(d, d_anchor, mu)

    def xi(theta: Tensor) -> Tensor:
        g, d = unflatten(theta)
        grad_g = torch.func.grad(loss_g)(g, d)
        grad_d = torch.func.grad(loss_d)(d, g)
        return torch.cat(
            [grad_g[k].reshape(-1) for k in names_g] + [grad_d[k].reshape(-1) for k in names_d]
        )

    theta0 = torch.cat([v.reshape(-1) for v in g0.values()] + [v.reshape(-1) for v in d0.values()])
    # Reverse-over-reverse: supports every op the training step supports (forward-mode AD
    # does not cover all of them); chunking bounds memory for the n vmapped backward passes.
    jac = torch.func.jacrev(xi, chunk_size=256)(theta0).detach().cpu().numpy()
    return GameJacobian(
        jacobian=jac,
        eigenvalues=np.linalg.eigvals(jac),
        field=xi(theta0).detach().cpu().numpy(),
        layout=layout,
        n_generator=n_g,
        n_critic=n_d,
    )


# ---- Dirac-GAN ---------------------------------------------------------------------------------


class DiracGenerator(nn.Module):
    """G(z) = θ for every z: a learnable point θ ∈ ℝ^dim (parameter `theta`, shape [dim])."""

    def __init__(self, theta: float = 1.0, dim: int = 1) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.full((dim,), float(theta)))

    def forward(self, z: Tensor) -> Tensor:
        """z [B, latent] → [B, dim], every row θ."""
        return self.theta.expand(z.shape[0], self.theta.shape[0])


class LinearCritic(nn.Linear):
    """v(x) = ψ·x without bias (parameter `weight`, shape [1, dim]); x [B, dim] → v [B].

    A subclass of nn.Linear so that `layer_spectral_norms` sees it (‖ψ‖₂).
    """

    def __init__(self, psi: float = 1.0, dim: int = 1) -> None:
        super().__init__(dim, 1, bias=False)
        with torch.no_grad():
            self.weight.fill_(float(psi))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight).squeeze(-1)


def dirac_gan(
    theta: float = 1.0,
    psi: float = 1.0,
    objective: str = "wasserstein",
    lipschitz: str = "none",
    lipschitz_params: dict[str, Any] | None = None,
    lr: float = 0.1,
    optimizer: str = "sgd",
    batch_size: int = 1,
) -> tuple[GAN, GANState]:
    """The Dirac-GAN (Mescheder et al. 2018): G(z) = θ, v(x) = ψ·x, real data at 0.

    Train it with `gan.step` / `gan.train` on `torch.zeros(N, 1)`. With the Wasserstein loss
    L_D = ψθ − ψ·0 and L_G = −ψθ, so ξ = (−ψ, θ) and J = [[0, −1], [1, 0]]: a pure rotation.

    Returns
    -------
    (GAN, GANState)
        A GAN whose generator/critic templates are `DiracGenerator` / `LinearCritic`, and its
        state at (θ, ψ) with fresh optimizer state.
    """
    opt = OptimizerSpec(name=optimizer, lr=lr)
    tiny = NetworkSpec(kind="mlp", widths=())
    config = GANConfig(
        latent_dim=1,
        generator=tiny,
        critic=tiny,
        objective=objective,
        lipschitz=lipschitz,
        lipschitz_params=dict(lipschitz_params or {}),
        batch_size=batch_size,
        g_opt=opt,
        d_opt=opt,
    )
    gan = GAN(config, data_dim=1)
    if gan.control.spectral_norm:
        raise ValueError("the Dirac-GAN critic is a bare linear map: spectral_norm is unsupported")
    # The GAN's modules are templates only (all tensors live in GANState), so swapping them
    # before init_state is safe. init_state re-draws every layer, so θ and ψ are set after it.
    gan.generator = DiracGenerator(theta)
    gan.critic = LinearCritic(psi)
    state = gan.init_state(0)
    state.g["theta"] = torch.full_like(state.g["theta"], float(theta))
    state.d["weight"] = torch.full_like(state.d["weight"], float(psi))
    return gan, state
