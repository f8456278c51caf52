"""Output heads of a mixed table's generator: spans sum to their scale, gradients reach every
raw output, vmap agrees with a loop, and the GAN applies them (and leaves the fast path)."""

from __future__ import annotations

import math

import pytest
import torch
from fedgan.simulator.gan import fastmlp
from fedgan.simulator.gan.heads import Heads, apply_heads, check_spans
from fedgan.simulator.gan.state import GANConfig
from fedgan.simulator.gan.train import GAN

H = 1 / math.sqrt(2)
SPANS = check_spans([(1, 4, "softmax", H), (4, 5, "tanh", 1.0), (5, 7, "softmax", 1.0)], 8)
"""Column 0 and 7 pass through; a 3-category span × 1/√2; a mode-specific scalar and modes."""


def test_spans_sum_to_their_scale_and_the_rest_passes() -> None:
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(0)) * 4
    y = apply_heads(x, SPANS)
    assert y.shape == x.shape
    torch.testing.assert_close(y[:, 1:4].sum(-1), torch.full((64,), H))
    torch.testing.assert_close(y[:, 5:7].sum(-1), torch.ones(64))
    assert (y[:, 1:4] > 0).all() and (y[:, 4].abs() <= 1).all()
    torch.testing.assert_close(y[:, 4], torch.tanh(x[:, 4]))
    torch.testing.assert_close(y[:, [0, 7]], x[:, [0, 7]])
    # softmax by hand for one row: exp / Σ exp
    e = torch.exp(x[0, 1:4])
    torch.testing.assert_close(y[0, 1:4], e / e.sum() * H)


def test_temperature_sharpens() -> None:
    x = torch.tensor([[0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    soft, sharp = apply_heads(x, SPANS), apply_heads(x, SPANS, temperature=0.1)
    # Column 1 holds the span's largest logit: a lower temperature gives it more mass.
    assert sharp[0, 1] > soft[0, 1] > H / 3 and sharp[0, 2] < soft[0, 2]


def test_gradients_reach_every_raw_output() -> None:
    x = torch.randn(5, 8, requires_grad=True)
    w = torch.randn(5, 8)
    (apply_heads(x, SPANS) * w).sum().backward()
    assert x.grad is not None and bool((x.grad.abs() > 0).all())


def test_vmap_matches_a_loop() -> None:
    x = torch.randn(3, 10, 8)
    batched = torch.func.vmap(lambda t: apply_heads(t, SPANS))(x)
    looped = torch.stack([apply_heads(t, SPANS) for t in x])
    torch.testing.assert_close(batched, looped)


@pytest.mark.parametrize(
    ("spans", "match"),
    [
        ([(0, 9, "softmax", 1.0)], "not inside"),
        ([(0, 2, "relu", 1.0)], "activation must be"),
        ([(0, 2, "softmax", 0.0)], "scale must be"),
        ([(0, 3, "softmax", 1.0), (2, 4, "softmax", 1.0)], "overlap"),
        ([(0, 3)], "is \\(start, end, activation, scale\\)"),
    ],
)
def test_bad_spans(spans: list[tuple[object, ...]], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        check_spans(spans, 8)


def test_the_gan_applies_its_heads_and_takes_the_general_path() -> None:
    from fedgan.simulator.gan.kinds import NetworkSpec

    cfg = GANConfig(generator=NetworkSpec(widths=(8,)), critic=NetworkSpec(widths=(8,)))
    plain = GAN(cfg, 8)
    gan = GAN(cfg, 8, output_spans=SPANS)
    assert isinstance(gan.heads, Heads) and plain.heads is None
    s = gan.init_state(0)
    x = gan.sample(s, 16, torch.Generator().manual_seed(1))
    torch.testing.assert_close(x[:, 1:4].sum(-1), torch.full((16,), H))
    # Same parameters, no heads: the raw outputs, which the heads map.
    raw = plain.G(s.g, torch.randn(16, cfg.latent_dim, generator=torch.Generator().manual_seed(1)))
    torch.testing.assert_close(x, apply_heads(raw, SPANS))
    assert fastmlp.why_not(gan) is not None and "heads" in str(fastmlp.why_not(gan))
    # A training step runs (the pure step, vmap-able), and the output keeps its shape.
    s2, hist = gan.train(s, torch.randn(64, 8), 2, torch.Generator().manual_seed(2))
    assert len(hist) == 2 and s2.step == 2
