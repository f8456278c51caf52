"""Lockstep training of many clients equals training each client on its own.

The reference is the sequential `GAN.train` on the reference step (`GAN.step` through torch.func,
the hand-batched MLP step switched off), one client at a time with its own generator: the
batched path — vmap, and for MLPs the hand-batched step (`fastmlp`) — must reproduce every
client's parameters, optimizer moments and statistics to float rounding, for every objective and
Lipschitz control (incl. the gradient penalty's double backward and the spectral norm's power
iteration), with clients of different data sizes and step counts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch
from fedgan.simulator.gan import batched, fastmlp
from fedgan.simulator.gan.diagnostics import lipschitz_metrics
from fedgan.simulator.gan.networks import NetworkSpec
from fedgan.simulator.gan.train import DRAW_BLOCK, GAN, GANState

PAIRS = [
    ("saturating", "none", {}),
    ("non_saturating", "none", {}),
    ("wasserstein", "weight_clip", {"c": 0.05}),
    ("wasserstein", "gradient_penalty", {"lam": 1.0}),
    ("non_saturating", "gradient_penalty", {"lam": 0.5, "sampling": "real", "center": 0.0}),
    ("hinge", "spectral_norm", {}),
    ("least_squares", "none", {}),
    ("kl", "none", {}),
    ("reverse_kl", "spectral_norm", {"n_power_iterations": 2}),
]


@pytest.fixture(params=[True, False], ids=["fastmlp", "vmap"])
def fast(request: pytest.FixtureRequest) -> Iterator[bool]:
    """Which batched path runs. The hand-batched step sums in another order than the reference,
    and where a gradient is zero but for rounding (a Wasserstein critic unit active on every
    row: its bias gradient cancels exactly) Adam's first update lr·g/(|g| + ε) turns float32
    noise into a visible step; in float64 that noise is far below ε, so the fast path is checked
    there (the float32 agreement of the fast path is in tests/gan/test_fastmlp.py)."""
    old = torch.get_default_dtype()
    if request.param:
        torch.set_default_dtype(torch.float64)
    yield request.param
    torch.set_default_dtype(old)


def _datas(sizes: list[int]) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    return [torch.randn(n, 2, generator=gen) + i for i, n in enumerate(sizes)]


def _close(a: GANState, b: GANState, tol: float = 1e-5) -> None:
    for name in batched.STATE_GROUPS:
        ga, gb = getattr(a, name), getattr(b, name)
        assert set(ga) == set(gb), name
        for k in ga:
            torch.testing.assert_close(ga[k], gb[k], rtol=tol, atol=tol, msg=f"{name}.{k}")


@pytest.mark.parametrize(("objective", "control", "params"), PAIRS)
def test_batched_training_matches_each_client_alone(
    make_gan: Callable[..., GAN],
    reference: Callable[[bool], None],
    objective: str,
    control: str,
    params: dict[str, float],
    fast: bool,
) -> None:
    gan = make_gan(
        objective=objective, lipschitz=control, lipschitz_params=params, n_critic=2, ema=0.9
    )
    sizes, steps = [20, 45, 33], [4, 4, 2]  # ragged data and a client with fewer steps
    datas = _datas(sizes)
    states = [gan.init_state(c) for c in range(3)]
    expected = []
    reference(False)
    for c in range(3):
        s, hist = gan.train(states[c], datas[c], steps[c], torch.Generator().manual_seed(c), 8)
        expected.append((s, {k: float(np.mean([h[k] for h in hist])) for k in hist[0]}))
    reference(fast)
    state, means = batched.train_batched(
        gan,
        batched.stack(states),
        batched.pad_data(datas),
        sizes,
        [torch.Generator().manual_seed(c) for c in range(3)],
        steps,
        total_steps=8,
    )
    for c, got in enumerate(batched.unstack(state)):
        _close(got, expected[c][0])
        for k, v in expected[c][1].items():
            assert float(means[k][c]) == pytest.approx(v, rel=1e-4, abs=1e-5), k


def test_noise_blocks_span_long_loops(
    make_gan: Callable[..., GAN], reference: Callable[[bool], None], fast: bool
) -> None:
    # More steps than one noise block: the batched path must cut the stream where train does.
    gan = make_gan(batch_size=4)
    n = DRAW_BLOCK + 3
    data = _datas([10, 12])
    states = [gan.init_state(0), gan.init_state(1)]
    reference(False)
    want = [gan.train(states[c], data[c], n, torch.Generator().manual_seed(c))[0] for c in (0, 1)]
    reference(fast)
    got, _ = batched.train_batched(
        gan,
        batched.stack(states),
        batched.pad_data(data),
        [10, 12],
        [torch.Generator().manual_seed(c) for c in (0, 1)],
        n,
    )
    for c, s in enumerate(batched.unstack(got)):
        _close(s, want[c], tol=1e-4)


def test_padding_is_never_read(make_gan: Callable[..., GAN]) -> None:
    # Client 0 has 5 points padded to 50 with NaN: a single read of padding would poison it.
    gan = make_gan()
    data = batched.pad_data(_datas([5, 50]))
    data[0, 5:] = float("nan")
    state, _ = batched.train_batched(
        gan,
        batched.stack([gan.init_state(0)] * 2),
        data,
        [5, 50],
        [torch.Generator().manual_seed(c) for c in (0, 1)],
        3,
    )
    assert all(torch.isfinite(v).all() for v in state.g.values())


@pytest.mark.parametrize(
    ("critic", "control", "activation"),
    [
        ("mlp", "spectral_norm", "relu"),
        ("two_branch", "spectral_norm", "relu"),
        ("mlp", "none", "relu"),  # the hand-batched path (fastmlp)
        ("mlp", "gradient_penalty", "silu"),
    ],
)
def test_batched_lipschitz_estimates_match(
    make_gan: Callable[..., GAN],
    reference: Callable[[bool], None],
    critic: str,
    control: str,
    activation: str,
) -> None:
    # The reference is the sequential `lipschitz_metrics` on the reference path (torch.func
    # vjp, one client at a time, the hand-batched MLP code off).
    gan = make_gan(
        lipschitz=control,
        critic=NetworkSpec(kind=critic, widths=(8, 6), activation=activation),
        generator=NetworkSpec(widths=(8,), output="tanh"),
    )
    assert (fastmlp.why_not(gan) is None) == (control != "spectral_norm")
    sizes = [20, 31]
    datas = _datas(sizes)
    states = [gan.init_state(c) for c in range(2)]
    got = batched.lipschitz_batched(
        gan,
        batched.stack(states),
        batched.pad_data(datas),
        sizes,
        [torch.Generator().manual_seed(c) for c in range(2)],
        n=40,
    )
    reference(False)
    for c in range(2):
        want = lipschitz_metrics(gan, states[c], datas[c], torch.Generator().manual_seed(c), n=40)
        reference(True)
        alone = lipschitz_metrics(gan, states[c], datas[c], torch.Generator().manual_seed(c), n=40)
        reference(False)
        for k, v in got.items():
            assert float(v[c]) == pytest.approx(want[f"lipschitz.{k}"], rel=1e-4), k
            assert alone[f"lipschitz.{k}"] == pytest.approx(want[f"lipschitz.{k}"], rel=1e-4), k


def test_stack_refuses_mixed_step_counters(make_gan: Callable[..., GAN]) -> None:
    gan = make_gan()
    a, b = gan.init_state(0), gan.init_state(1)
    b.step = 3
    with pytest.raises(ValueError, match="step counter"):
        batched.stack([a, b])
    s = batched.stack([a, a])
    assert batched.client_count(s) == 2
    _close(batched.unstack(s)[1], a, tol=0.0)


def test_per_client_schedules_match_each_client_alone(
    make_gan: Callable[..., GAN], reference: Callable[[bool], None], fast: bool
) -> None:
    # Clients at different points of different-length lr schedules (heterogeneous local steps),
    # with R1, FedProx anchors and the EMA: every state group must match.
    gan = make_gan(
        lr_schedule="linear",
        lr_final=0.1,
        lipschitz="gradient_penalty",
        lipschitz_params={"lam": 0.5, "sampling": "real", "center": 0.0},
        prox_mu=0.1,
        ema=0.9,
    )
    sizes, steps, starts, totals = [20, 30, 25], [3, 5, 2], [3, 10, 0], [9, 20, 6]
    datas = _datas(sizes)
    states = [gan.init_state(c) for c in range(3)]
    for c, s in enumerate(states):
        s.g_anchor = {k: v + 0.01 * c for k, v in s.g.items()}
        s.d_anchor = {k: v.clone() for k, v in s.d.items()}
    reference(False)
    want = []
    for c in range(3):
        s0 = states[c]
        s0.step = starts[c]
        gen = torch.Generator().manual_seed(c)
        want.append(gan.train(s0, datas[c], steps[c], gen, totals[c])[0])
        s0.step = 0
    reference(fast)
    got, _ = batched.train_batched(
        gan,
        batched.stack(states),
        batched.pad_data(datas),
        sizes,
        [torch.Generator().manual_seed(c) for c in range(3)],
        steps,
        total_steps=totals,
        start_steps=starts,
    )
    for c, s in enumerate(batched.unstack(got)):
        want[c].step = s.step  # the batch's counter advances by the longest client's steps
        _close(s, want[c], tol=1e-9 if fast else 1e-5)


@pytest.mark.parametrize("control", ["spectral_norm", "none"])
def test_a_diverged_critic_gets_nan_estimates_not_an_error(
    make_gan: Callable[..., GAN], control: str
) -> None:
    gan = make_gan(lipschitz=control)
    states = [gan.init_state(0), gan.init_state(1)]
    bad = states[1].d
    first = next(iter(bad))
    bad[first] = torch.full_like(bad[first], float("nan"))
    datas = _datas([20, 20])
    alone = lipschitz_metrics(gan, states[1], datas[1], torch.Generator().manual_seed(1), n=16)
    assert np.isnan(alone["lipschitz.layer_product"]) and np.isnan(alone["lipschitz.real"])
    got = batched.lipschitz_batched(
        gan,
        batched.stack(states),
        batched.pad_data(datas),
        [20, 20],
        [torch.Generator().manual_seed(c) for c in range(2)],
        n=16,
    )
    assert all(np.isfinite(float(v[0])) for v in got.values())
    assert np.isnan(float(got["layer_product"][1]))


def test_conv_networks_batch_too() -> None:
    # The 8×8 image GANs (digits): convolutions, transposed convolutions, SN on conv weights.
    from tests.gan.conftest import tiny_config

    config = tiny_config(
        latent_dim=4,
        generator=NetworkSpec(kind="conv", widths=(8, 4), output="tanh"),
        critic=NetworkSpec(kind="conv", widths=(4, 8)),
        lipschitz="spectral_norm",
    )
    gan = GAN(config, 64, (1, 8, 8))
    gen = torch.Generator().manual_seed(3)
    datas = [torch.rand(n, 64, generator=gen) * 2 - 1 for n in (20, 28)]
    states = [gan.init_state(c) for c in range(2)]
    want = [gan.train(states[c], datas[c], 3, torch.Generator().manual_seed(c))[0] for c in (0, 1)]
    got, _ = batched.train_batched(
        gan,
        batched.stack(states),
        batched.pad_data(datas),
        [20, 28],
        [torch.Generator().manual_seed(c) for c in (0, 1)],
        3,
    )
    for c, s in enumerate(batched.unstack(got)):
        _close(s, want[c], tol=1e-4)
