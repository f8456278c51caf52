"""The hand-batched MLP step equals the reference step, `GAN.step` through torch.func autograd.

The oracle is always the reference path (`fastmlp.ENABLED = False`: `GAN.train`'s loop over the
pure `GAN.step`, differentiated by torch.func), never the fast path itself. In float64 the two
must agree to ~1e-10 — the hand-written backward, double backward and optimizers are the same
mathematics —, in float32 to float rounding.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
import torch
from fedgan.simulator.gan import batched, fastmlp
from fedgan.simulator.gan.networks import NetworkSpec
from fedgan.simulator.gan.objectives import OBJECTIVES, NonSaturating
from fedgan.simulator.gan.optim import OptimizerSpec
from fedgan.simulator.gan.train import GAN, GANState

from tests.gan.conftest import tiny_config

CONTROLS: list[tuple[str, dict[str, Any]]] = [
    ("none", {}),
    ("weight_clip", {"c": 0.05}),
    ("gradient_penalty", {"lam": 1.0}),  # WGAN-GP: interpolates, centre 1
    ("gradient_penalty", {"lam": 0.5, "sampling": "real", "center": 0.0}),  # R1
    ("gradient_penalty", {"lam": 0.5, "sampling": "fake", "center": 1.0}),
    ("r1", {"lam": 0.5}),  # the default control: R1 by name
]
ACTIVATIONS = ["relu", "leaky_relu", "elu", "gelu", "tanh", "silu"]
BUILT_IN = OBJECTIVES.names()  # every registered objective has an entry in the fast tables


class Mine(NonSaturating):
    """A plug-in objective: not in the fast tables (even as a subclass), so the vmap path."""


def _gan(**overrides: Any) -> GAN:
    base: dict[str, Any] = dict(
        generator=NetworkSpec(widths=(8, 6), activation="relu"),
        critic=NetworkSpec(widths=(7, 5), activation="relu"),
        n_critic=2,
        ema=0.9,
    )
    base.update(overrides)
    return GAN(tiny_config(**base), data_dim=2)


def _data(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed)) + 0.5


def _train(
    gan: GAN, fast: bool, use: Callable[[bool], None], steps: int = 3, state: GANState | None = None
) -> tuple[GANState, list[dict[str, float]]]:
    use(fast)
    s = gan.init_state(0) if state is None else state
    return gan.train(s, _data(40), steps, torch.Generator().manual_seed(2), total_steps=10)


def _max_diff(a: GANState, b: GANState) -> float:
    worst = 0.0
    for name in batched.STATE_GROUPS:
        ga, gb = getattr(a, name), getattr(b, name)
        assert set(ga) == set(gb), name
        for k in ga:
            assert ga[k].shape == gb[k].shape and ga[k].dtype == gb[k].dtype, (name, k)
            worst = max(worst, float((ga[k] - gb[k]).abs().max()))
    return worst


def test_covers_mlps_and_names_what_it_does_not(reference: Callable[[bool], None]) -> None:
    assert fastmlp.why_not(_gan()) is None
    assert fastmlp.why_not(_gan(lipschitz="r1")) is None  # the default recipe's control
    conv = GAN(
        tiny_config(
            latent_dim=4,
            generator=NetworkSpec(kind="conv", widths=(8, 4), output="tanh"),
            critic=NetworkSpec(kind="conv", widths=(4, 8)),
        ),
        64,
        (1, 8, 8),
    )
    assert "ConvGenerator" in (fastmlp.why_not(conv) or "")
    assert "TwoBranchCritic" in (
        fastmlp.why_not(_gan(critic=NetworkSpec(kind="two_branch", widths=(8,)))) or ""
    )
    assert "spectral norm" in (fastmlp.why_not(_gan(lipschitz="spectral_norm")) or "")

    assert all(OBJECTIVES.get(n) in fastmlp.CRITIC_TERMS for n in BUILT_IN)
    OBJECTIVES.add("mine-test", Mine)
    try:
        assert "Mine" in (fastmlp.why_not(_gan(objective="mine-test")) or "")
    finally:
        OBJECTIVES._items.pop("mine-test", None)
    reference(False)
    assert "disabled" in (fastmlp.why_not(_gan()) or "")


@pytest.mark.parametrize(("control", "params"), CONTROLS)
@pytest.mark.parametrize("objective", BUILT_IN)
def test_every_objective_and_control_in_float64(
    float64: None,
    reference: Callable[[bool], None],
    objective: str,
    control: str,
    params: dict[str, Any],
) -> None:
    gan = _gan(objective=objective, lipschitz=control, lipschitz_params=params, prox_mu=0.1)
    s0 = gan.init_state(0)
    s0.g_anchor = {k: v + 0.01 for k, v in s0.g.items()}
    s0.d_anchor = {k: v - 0.01 for k, v in s0.d.items()}
    want, hist_want = _train(gan, False, reference, state=s0)
    got, hist_got = _train(gan, True, reference, state=s0)
    assert _max_diff(got, want) < 1e-9
    assert [list(h) for h in hist_got] == [list(h) for h in hist_want]  # same keys, same order
    for hg, hw in zip(hist_got, hist_want, strict=True):
        for k in hw:
            assert hg[k] == pytest.approx(hw[k], rel=1e-9, abs=1e-12), k


@pytest.mark.parametrize(
    ("activation", "output", "control"),
    [
        (a, o, c)
        for (a, o), c in itertools.product(
            itertools.product(ACTIVATIONS, ["linear", "tanh"]), [1, 3]
        )
    ],
)
def test_every_activation_and_output_in_float64(
    float64: None, reference: Callable[[bool], None], activation: str, output: str, control: int
) -> None:
    # The penalty's double backward has a second-derivative term for the smooth activations.
    name, params = CONTROLS[control]
    gan = _gan(
        lipschitz=name,
        lipschitz_params=params,
        generator=NetworkSpec(widths=(8, 6), activation=activation, output=output),
        critic=NetworkSpec(widths=(7, 5), activation=activation),
    )
    want, _ = _train(gan, False, reference)
    got, _ = _train(gan, True, reference)
    assert _max_diff(got, want) < 1e-9


@pytest.mark.parametrize(
    "opt",
    [
        OptimizerSpec(name="adam", lr=1e-2, betas=(0.0, 0.9), weight_decay=0.01),
        OptimizerSpec(name="rmsprop", lr=1e-2, alpha=0.9, weight_decay=0.01),
        OptimizerSpec(name="sgd", lr=1e-2, momentum=0.5),
        OptimizerSpec(name="sgd", lr=1e-2),
    ],
)
def test_optimizers_and_schedules_in_float64(
    float64: None, reference: Callable[[bool], None], opt: OptimizerSpec
) -> None:
    gan = _gan(g_opt=opt, d_opt=opt, lr_schedule="cosine", lr_final=0.2, n_critic=1)
    want, _ = _train(gan, False, reference, steps=4)
    got, _ = _train(gan, True, reference, steps=4)
    assert _max_diff(got, want) < 1e-9


def test_float32_agrees_to_rounding(reference: Callable[[bool], None]) -> None:
    gan = _gan(lipschitz="gradient_penalty", lipschitz_params=CONTROLS[3][1], n_critic=1)
    want, _ = _train(gan, False, reference, steps=6)
    got, _ = _train(gan, True, reference, steps=6)
    assert _max_diff(got, want) < 1e-5


def test_objective_terms_are_the_objectives_gradients() -> None:
    # Each table entry (loss per client and its derivative in v) against autograd through the
    # objective's own critic_loss / generator_loss, client by client.
    gen = torch.Generator().manual_seed(0)
    vr, vf = torch.randn(3, 16, generator=gen), torch.randn(3, 16, generator=gen)
    for name in BUILT_IN:
        obj = OBJECTIVES.get(name)()
        loss, dr, df = fastmlp.CRITIC_TERMS[type(obj)](vr, vf)
        gloss, dg = fastmlp.GEN_TERMS[type(obj)](vf)
        for c in range(3):
            r, f = vr[c].clone().requires_grad_(), vf[c].clone().requires_grad_()
            want = obj.critic_loss(r, f)
            want_r, want_f = torch.autograd.grad(want, (r, f))
            torch.testing.assert_close(loss[c], want.detach(), msg=name)
            torch.testing.assert_close(dr[c], want_r, msg=name)
            torch.testing.assert_close(df[c], want_f, msg=name)
            f2 = vf[c].clone().requires_grad_()
            gw = obj.generator_loss(f2)
            torch.testing.assert_close(gloss[c], gw.detach(), msg=name)
            torch.testing.assert_close(dg[c], torch.autograd.grad(gw, f2)[0], msg=name)


def test_states_handed_out_are_copies(reference: Callable[[bool], None]) -> None:
    gan = _gan()
    seen: list[GANState] = []
    final, _ = gan.train(
        gan.init_state(0),
        _data(30),
        3,
        torch.Generator().manual_seed(0),
        callback=lambda s, row: seen.append(s),
    )
    assert [s.step for s in seen] == [1, 2, 3]
    # Later steps update the fast path's buffers in place: earlier states must not move.
    assert _max_diff(seen[-1], final) == 0.0
    assert _max_diff(seen[0], seen[-1]) > 0.0
    reference(False)
    want: list[GANState] = []
    gan.train(
        gan.init_state(0),
        _data(30),
        3,
        torch.Generator().manual_seed(0),
        callback=lambda s, row: want.append(s),
    )
    assert all(_max_diff(a, b) < 1e-5 for a, b in zip(seen, want, strict=True))


def test_flat_round_trip_is_exact() -> None:
    gan = _gan(prox_mu=0.1)
    fast = fastmlp.plan(gan)
    assert fast is not None
    states = [gan.init_state(c) for c in range(3)]
    stacked = batched.stack(states)
    back = fast.to_state(fast.to_flat(stacked), stacked)
    assert _max_diff(back, stacked) == 0.0
    one = fast.to_state(fast.to_flat(states[1], batch=False), states[1], batch=False)
    assert _max_diff(one, states[1]) == 0.0


# --- a critic alone: the server-held generators' client step ------------------------------------


@pytest.mark.parametrize(("control", "params"), CONTROLS)
@pytest.mark.parametrize("objective", ["non_saturating", "wasserstein"])
def test_server_held_critic_steps_and_answers_in_float64(
    float64: None, objective: str, control: str, params: dict[str, Any]
) -> None:
    from fedgan.simulator.gan.split import critic_steps, mdgan_feedback, uagan_answer

    # Three clients with their own critics; client 1 has stepped before (its Adam counter
    # differs, so the fused update runs row by row).
    gan = _gan(objective=objective, lipschitz=control, lipschitz_params=params, n_critic=2)
    gen = torch.Generator().manual_seed(5)
    k, nc, b = 3, 2, 16
    states = [gan.init_state(10 + i) for i in range(k)]
    reals, fakes = torch.randn(k, nc, b, 2, generator=gen), torch.randn(k, nc, b, 2, generator=gen)
    eps, x = torch.rand(k, nc, b, 1, generator=gen), torch.randn(k, b, 2, generator=gen)
    states[1], _ = critic_steps(gan, states[1], reals[0], fakes[0], eps[0])
    # Oracle: the reference step (torch.func) client by client.
    want = [critic_steps(gan, states[i], reals[i], fakes[i], eps[i], 0.7) for i in range(k)]
    fast = fastmlp.plan(gan)
    assert fast is not None
    stacked = batched.stack(states)
    f = fast.critic_flat(stacked.d, stacked.d_opt)
    stats = fast.critic_steps_on(f, reals, fakes, eps, 0.7)
    d, d_opt = fast.critic_params(f)
    for i, (st, st_stats) in enumerate(want):
        for name, got in (("d", d), ("d_opt", d_opt)):
            ref = getattr(st, name)
            assert set(got) == set(ref)
            for key in ref:
                assert torch.allclose(got[key][i], ref[key].to(got[key].dtype), atol=1e-10), key
        for key, value in st_stats.items():
            assert float(stats[key][i]) == pytest.approx(float(value), rel=1e-9, abs=1e-12), key
    e, loss = fast.generator_feedback(f, x)
    logits, grads = fast.logits_and_input_grads(f, x)
    for i, (st, _) in enumerate(want):
        e_ref, loss_ref = mdgan_feedback(gan, st, x[i])
        l_ref, g_ref = uagan_answer(gan, st, x[i])
        assert torch.allclose(e[i], e_ref, atol=1e-12) and float(loss[i]) == pytest.approx(
            float(loss_ref), rel=1e-10
        )
        assert torch.allclose(logits[i], l_ref, atol=1e-10)
        assert torch.allclose(grads[i], g_ref, atol=1e-10)
