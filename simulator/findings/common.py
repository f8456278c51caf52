"""What every finding shares: the result record, mean ± std cells, tables, figures, tiny GANs."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fedgan.simulator.gan.networks import NetworkSpec
from fedgan.simulator.gan.optim import OptimizerSpec
from fedgan.simulator.gan.train import GAN, GANConfig, GANState
from torch import Tensor

QUICK_RUN = (
    "gan.generator.widths=[16, 16]",
    "gan.critic.widths=[16, 16]",
    "data.n_samples=2000",
    "evaluation.n_samples=500",
    "federation.rounds=4",
    "evaluation.every=4",
)
"""Overrides of a quick (CI-sized) run of a quickstart-shaped item: smoke values only."""


@dataclass
class Finding:
    """One item of docs/findings.md.

    `expectation` is fixed text written before any measurement; `table`, `verdict` and `agrees`
    come from the measurement (the verdict by the rule stated in `rule`). `values` holds the
    key numbers (means over seeds) that the tests check. `decided` is False when the rule
    could not be applied (e.g. the methods it compares were skipped): the verdict then reads
    "undecided", neither agrees nor disagrees. `more_figures` follow `figure` in the section.
    """

    number: int
    title: str
    setup: str
    expectation: str
    rule: str
    table: str
    verdict: str
    agrees: bool
    figure: str | None = None
    notes: str = ""
    values: dict[str, Any] = field(default_factory=dict)
    decided: bool = True
    more_figures: tuple[str, ...] = ()

    @property
    def outcome(self) -> str:
        """'agrees', 'disagrees' or 'undecided'."""
        if not self.decided:
            return "undecided"
        return "agrees" if self.agrees else "disagrees"


def mean_std(values: Iterable[float], fmt: str = ".3f", scale: float = 1.0) -> str:
    """'m ± s' over seeds (population std, ddof=0); NaNs dropped and counted; 'n/a' if all NaN."""
    v = np.asarray(list(values), dtype=float) * scale
    bad = int(np.isnan(v).sum())
    if bad == len(v):
        return "n/a"
    cell = f"{np.nanmean(v):{fmt}} ± {np.nanstd(v):{fmt}}"
    return cell + (f" ({bad} n/a)" if bad else "")


def nanmean(values: Iterable[float]) -> float:
    """Mean over seeds ignoring NaNs (NaN when every value is NaN, without a warning)."""
    v = np.asarray(list(values), dtype=float)
    return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")


def md_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def save_figure(fig: Any, fig_dir: Path, name: str) -> str:
    """Save a matplotlib figure as fig_dir/name (PNG, low dpi: they stay < 150 KB); close it."""
    import matplotlib.pyplot as plt

    fig_dir.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    tmp = fig_dir / f".{name}.tmp.png"
    fig.savefig(tmp, dpi=72)
    plt.close(fig)
    tmp.replace(fig_dir / name)  # atomic: a reader never sees half a PNG
    return name


def pyplot() -> Any:
    """matplotlib.pyplot on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def make_gan(
    objective: str,
    lipschitz: str = "none",
    params: dict[str, Any] | None = None,
    *,
    widths: tuple[int, ...] = (64, 64),
    critic_kind: str = "mlp",
    data_dim: int = 2,
    latent_dim: int = 2,
    n_critic: int = 1,
    batch_size: int = 128,
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.5, 0.999),
    optimizer: str = "adam",
) -> GAN:
    """A small MLP GAN for the findings' experiments (same widths for G and D)."""
    opt = OptimizerSpec(name=optimizer, lr=lr, betas=betas)
    config = GANConfig(
        latent_dim=latent_dim,
        generator=NetworkSpec(kind="mlp", widths=widths),
        critic=NetworkSpec(kind=critic_kind, widths=widths),
        objective=objective,
        lipschitz=lipschitz,
        lipschitz_params=dict(params or {}),
        n_critic=n_critic,
        batch_size=batch_size,
        g_opt=opt,
        d_opt=opt,
    )
    return GAN(config, data_dim)


def train_critic(
    gan: GAN, state: GANState, real: Tensor, steps: int, gen: torch.Generator
) -> GANState:
    """`steps` critic-only updates against the (frozen) generator; real [N, d]."""
    b, latent = gan.config.batch_size, gan.config.latent_dim
    for _ in range(steps):
        idx = torch.randint(real.shape[0], (b,), generator=gen)
        z = torch.randn(b, latent, generator=gen)
        eps = torch.rand(b, 1, generator=gen)
        state, _ = gan.critic_step(state, real[idx], z, eps, 1.0)
    return state


def fit_slope(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Least-squares slope dy/dx of a straight line through the points."""
    return float(np.polyfit(np.asarray(x, dtype=float), np.asarray(y, dtype=float), 1)[0])
