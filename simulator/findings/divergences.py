"""Item 3: disjoint supports — the JS divergence sits at ln 2, the Wasserstein estimate slopes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from fedgan.simulator.findings.common import (
    Finding,
    fit_slope,
    make_gan,
    md_table,
    mean_std,
    nanmean,
    pyplot,
    save_figure,
    train_critic,
)
from fedgan.simulator.gan.diagnostics import generator_gradient_profile, js_estimate
from fedgan.simulator.gan.train import GAN, GANState
from fedgan.simulator.seeding import derive_seed, torch_generator
from torch import Tensor, nn

LN2 = math.log(2.0)

EXPECTATION = (
    "Real points lie on the line x = 0 ((0, z), z ~ N(0, 1)), generated ones on the parallel "
    "line x = θ. For every θ ≠ 0 the supports are disjoint: JS = ln 2 ≈ 0.693 whatever θ, so "
    "a (near-)optimal classifier critic hands the generator no slope — the saturating "
    "generator loss has ∂L_G/∂θ ≈ 0 — while W₁ = |θ| falls linearly as the line slides "
    "towards the data, and a Lipschitz critic passes a gradient of size ≈ 1 at every θ."
)
RULE = (
    "two parts. Divergences: every JS estimate (over θ and seeds) within 0.1 of ln 2, the JS "
    "estimate's slope in θ below 0.1 in size, the W estimate's slope above 0.5. Gradients: "
    "|∂L_G/∂θ| through the JS critic below 0.05 at every θ (seed mean), through the W critic "
    "above 0.5 on average. Agrees if both parts hold; the verdict names a part that fails."
)


class LineGenerator(nn.Module):
    """G(z) = (θ, z₀): the data line shifted by θ along x (parameter `theta`, shape [1])."""

    def __init__(self, theta: float = 1.0) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.full((1,), float(theta)))

    def forward(self, z: Tensor) -> Tensor:
        """z [B, 1] → [B, 2]."""
        return torch.cat([self.theta.expand(z.shape[0], 1), z[:, :1]], dim=1)


def _line_gan(objective: str, lipschitz: str, params: dict[str, object] | None) -> GAN:
    gan = make_gan(objective, lipschitz, params, latent_dim=1, widths=(64, 64))
    gan.generator = LineGenerator()  # a template swap, as `dirac_gan` does
    return gan


def _set_theta(state: GANState, theta: float) -> GANState:
    state.g["theta"] = torch.full((1,), float(theta))
    return state


def _sweep(
    kind: str, thetas: list[float], seed: int, quick: bool
) -> tuple[list[float], list[float], float]:
    """(estimate, |∂L_G/∂θ|) at each θ, the critic trained on (warm-started from the last θ),
    and |∂L_G/∂θ| at the last θ after 4× more critic steps."""
    if kind == "js":
        gan = _line_gan("saturating", "none", None)
    else:
        gan = _line_gan("wasserstein", "gradient_penalty", {"lam": 10.0})
    gen = torch_generator(seed, "train", 0 if kind == "js" else 1)
    real = torch.cat([torch.zeros(4000, 1), torch.randn(4000, 1, generator=gen)], dim=1)
    state = gan.init_state(derive_seed(seed, "init"))
    est, grad = [], []
    longer = float("nan")
    for i, theta in enumerate(thetas):
        state = _set_theta(state, theta)
        state = train_critic(gan, state, real, (300 if i == 0 else 100) // (2 if quick else 1), gen)
        z = torch.randn(2048, 1, generator=gen)
        x_real = real[torch.randint(real.shape[0], (2048,), generator=gen)]
        with torch.no_grad():
            v_real = gan.D(state.d, state.d_buf, x_real)
            v_fake = gan.D(state.d, state.d_buf, gan.G(state.g, z))
        if kind == "js":
            est.append(js_estimate(gan.objective.critic_loss(v_real, v_fake)).js)
        else:
            est.append(float(v_real.mean() - v_fake.mean()))
        grad.append(generator_gradient_profile(gan, state, z[:512]).batch_grad_norm)
    # At the last θ, train the critic 4× longer: does the gradient keep falling towards 0?
    state = train_critic(gan, state, real, 400 // (2 if quick else 1), gen)
    z = torch.randn(512, 1, generator=gen)
    longer = generator_gradient_profile(gan, state, z).batch_grad_norm
    return est, grad, longer


def run(quick: bool, fig_dir: Path) -> Finding:
    seeds = [0] if quick else [0, 1, 2]
    thetas = [1.0, 0.8, 0.6, 0.4, 0.2] if quick else [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2]
    res = {k: [_sweep(k, thetas, s, quick) for s in seeds] for k in ("js", "w")}
    js = np.array([r[0] for r in res["js"]])  # [seeds, θ]
    w = np.array([r[0] for r in res["w"]])
    gjs = np.array([r[1] for r in res["js"]])
    gw = np.array([r[1] for r in res["w"]])
    slope_js = [fit_slope(thetas, row) for row in js]
    slope_w = [fit_slope(thetas, row) for row in w]
    rows = [
        [
            f"{t:.1f}",
            mean_std(js[:, i]),
            mean_std(gjs[:, i], ".4f"),
            mean_std(w[:, i]),
            mean_std(gw[:, i]),
        ]
        for i, t in enumerate(thetas)
    ]
    rows.append(["slope d(·)/dθ", mean_std(slope_js), "", mean_std(slope_w), ""])
    values = {
        "js_min": float(js.min()),
        "js_max": float(js.max()),
        "slope_js": nanmean(slope_js),
        "slope_w": nanmean(slope_w),
        "grad_js": float(gjs.mean()),
        "grad_w": float(gw.mean()),
        "grad_js_last": float(gjs[:, -1].mean()),
        "grad_js_last_longer": nanmean(r[2] for r in res["js"]),
    }
    divergences_ok = bool(
        np.abs(js - LN2).max() <= 0.1 and abs(values["slope_js"]) < 0.1 and values["slope_w"] > 0.5
    )
    gradients_ok = bool(gjs.mean(0).max() < 0.05 and values["grad_w"] > 0.5)
    agrees = divergences_ok and gradients_ok
    verdict = (
        f"Divergences {'agree' if divergences_ok else 'disagree'}: JS estimates "
        f"{values['js_min']:.3f}–{values['js_max']:.3f} (ln 2 = {LN2:.3f}), slope "
        f"{values['slope_js']:+.3f}; W slope {values['slope_w']:+.3f}. Gradients "
        f"{'agree' if gradients_ok else 'disagree'}: through the classifier critic "
        f"{gjs.mean(0).min():.3f}–{gjs.mean(0).max():.3f} (largest at the smallest θ), through "
        f"the Lipschitz critic {values['grad_w']:.3f} on average."
    )
    if not gradients_ok:
        verdict += (
            f" Why: the saturating gradient is D(G(z))·∂v/∂θ, which vanishes only as the "
            f"classifier becomes optimal; at θ = {thetas[-1]} and this budget it is not yet "
            f"(4× more critic steps take it from {values['grad_js_last']:.3f} to "
            f"{values['grad_js_last_longer']:.3f}). The divergence is flat at ln 2 at once, "
            "the gradient follows only in the limit."
        )
    return Finding(
        number=3,
        title="Disjoint supports: Jensen–Shannon is flat at ln 2, Wasserstein keeps a slope",
        setup=(
            "Real data (0, z) and generated (θ, z), z ~ N(0, 1) (the generator is the line "
            "itself, one parameter θ). θ slides from 1.0 to 0.2; at each θ the critic (MLP "
            "2×64, Adam 1e-3) trains 100 more steps (300 at the first θ; half in quick mode), "
            "warm-started. JS: a classifier critic (standard loss), JS ≈ ln 2 − L_D/2 "
            "(`js_estimate`). W: a WGAN-GP critic (λ = 10), W ≈ E v(real) − E v(fake). "
            "|∂L_G/∂θ|: the gradient of the saturating generator loss (JS critic) or of −E v "
            f"(W critic) on 512 codes. {len(seeds)} seed(s), mean ± std."
        ),
        expectation=EXPECTATION,
        rule=RULE,
        table=md_table(
            [
                "θ",
                "JS estimate (nats)",
                "|∂L_G/∂θ|, JS critic",
                "W estimate",
                "|∂L_G/∂θ|, W critic",
            ],
            rows,
        ),
        verdict=verdict,
        agrees=agrees,
        figure=_figure(thetas, js, w, gjs, gw, fig_dir),
        values=values,
    )


def _figure(
    thetas: list[float],
    js: np.ndarray,
    w: np.ndarray,
    gjs: np.ndarray,
    gw: np.ndarray,
    fig_dir: Path,
) -> str:
    plt = pyplot()
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.6))
    for arr, label in ((js, "JS estimate"), (w, "W estimate")):
        ax[0].errorbar(thetas, arr.mean(0), yerr=arr.std(0), fmt="o-", ms=3, label=label)
    ax[0].axhline(LN2, color="k", ls=":", lw=1, label="ln 2")
    ax[0].plot(thetas, thetas, "k--", lw=1, label="|θ| (true W₁)")
    ax[0].set_xlabel("θ (distance of the generated line from the data)")
    ax[0].set_title("divergence estimates")
    ax[0].legend(fontsize=8)
    for arr, label in ((gjs, "JS critic, saturating loss"), (gw, "W critic")):
        ax[1].errorbar(thetas, arr.mean(0), yerr=arr.std(0), fmt="o-", ms=3, label=label)
    ax[1].set_xlabel("θ")
    ax[1].set_ylabel("|∂L_G/∂θ|")
    ax[1].set_yscale("symlog", linthresh=1e-3)
    ax[1].set_title("gradient reaching the generator")
    ax[1].legend(fontsize=8)
    return save_figure(fig, fig_dir, "03-disjoint-supports.png")
