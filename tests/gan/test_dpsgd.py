"""DP-SGD for the critic (`simulator/gan/dpsgd.py`, the reference and the hand-batched step).

The oracle of the per-sample gradients is written here from the definitions, independently of
both steps: one real sample's critic loss term (non-saturating −log σ(v(x)), Wasserstein −v(x))
plus its own penalty term (R1: λ‖∇ₓv(x)‖²; WGAN-GP: λ(‖∇ₓv(x̂)‖ − 1)² at its interpolate
x̂ = εx + (1 − ε)G(z)), differentiated per sample by `torch.func.vmap(torch.func.grad(...))` in
float64. The noise and the sampling are checked statistically against their distributions, with
tolerances of several standard deviations of the estimate.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from fedgan.simulator.gan import batched, dpsgd, fastmlp
from fedgan.simulator.gan.dpsgd import DPSGD, dp_problems, draw_batches
from fedgan.simulator.gan.fastmlp import augment
from fedgan.simulator.gan.networks import NetworkSpec
from fedgan.simulator.gan.optim import OptimizerSpec
from fedgan.simulator.gan.train import GAN, GANState, Params
from torch import Tensor, nn
from torch.func import functional_call

from tests.gan.conftest import tiny_config

CONTROLS: dict[str, tuple[str, dict[str, Any]]] = {
    "none": ("none", {}),
    "r1": ("r1", {"lam": 0.7}),
    "gp": ("gradient_penalty", {"lam": 1.3}),  # WGAN-GP: interpolates, centre 1
    "gp_fake": ("gradient_penalty", {"lam": 0.9, "sampling": "fake"}),  # no real data: unclipped
}
OBJECTIVES = ["non_saturating", "wasserstein"]
INF = math.inf


def bn_critic(spec: NetworkSpec, d: int, img: Any, sn: bool) -> nn.Module:
    """A plug-in critic kind with batch statistics (for `dp_problems`)."""
    return nn.Sequential(nn.Linear(d, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 1))


@pytest.fixture(autouse=True)
def _f64() -> Iterator[None]:
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)
    fastmlp.ENABLED = True


def _gan(
    control: str = "r1",
    objective: str = "non_saturating",
    act: str = "relu",
    dp: DPSGD | None = None,
    **over: Any,
) -> GAN:
    name, params = CONTROLS[control]
    base: dict[str, Any] = dict(
        generator=NetworkSpec(widths=(8,), activation=act),
        critic=NetworkSpec(widths=(7, 5), activation=act),
        objective=objective,
        lipschitz=name,
        lipschitz_params=params,
        batch_size=6,
        dp=dp,
    )
    base.update(over)
    return GAN(tiny_config(**base), data_dim=2)


def _data(n: int, seed: int = 1) -> Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed)) + 0.5


def _trained(gan: GAN, seed: int = 0) -> GANState:
    """A state a few ordinary steps from init (not the symmetric initial draw)."""
    plain = GAN(tiny_config(**{**_cfg_dict(gan), "dp": None}), data_dim=2)
    s, _ = plain.train(plain.init_state(seed), _data(30), 3, torch.Generator().manual_seed(5))
    return s


def _cfg_dict(gan: GAN) -> dict[str, Any]:
    c = gan.config
    return {f: getattr(c, f) for f in c.__dataclass_fields__}


# ---- the oracle --------------------------------------------------------------------------------


def oracle_per_sample(
    gan: GAN, control: str, objective: str, d: Params, real: Tensor, fake: Tensor, eps: Tensor
) -> Params:
    """g_i = ∇_θ [real loss term of x_i + x_i's penalty term], plainly, per sample."""
    lam = CONTROLS[control][1].get("lam", 0.0)

    def v(dd: Params, x: Tensor) -> Tensor:  # one point [d] → scalar
        return functional_call(gan.critic, dd, (x[None],))[0]

    def loss(dd: Params, x: Tensor, f: Tensor, e: Tensor) -> Tensor:
        vx = v(dd, x)
        term = F.softplus(-vx) if objective == "non_saturating" else -vx
        if control == "r1":
            gx = torch.func.grad(lambda y: v(dd, y))(x)
            term = term + lam * (gx * gx).sum()
        elif control == "gp":
            xh = e * x + (1 - e) * f
            gx = torch.func.grad(lambda y: v(dd, y))(xh)
            term = term + lam * (torch.linalg.vector_norm(gx) - 1.0) ** 2
        return term

    return torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0, 0, 0))(d, real, fake, eps)


def oracle_fake_grad(gan: GAN, control: str, objective: str, d: Params, fake: Tensor) -> Params:
    """∇_θ of the terms on generated points: their loss term's mean (and a fake-sampled
    penalty's)."""
    lam = CONTROLS[control][1].get("lam", 0.0)

    def loss(dd: Params) -> Tensor:
        vf = functional_call(gan.critic, dd, (fake,))
        total = F.softplus(vf).mean() if objective == "non_saturating" else vf.mean()
        if control == "gp_fake":

            def v(y: Tensor) -> Tensor:
                return functional_call(gan.critic, dd, (y[None],))[0]

            gx = torch.func.vmap(torch.func.grad(v))(fake)
            total = total + lam * ((torch.linalg.vector_norm(gx, dim=-1) - 1.0) ** 2).mean()
        return total

    return torch.func.grad(loss)(d)


def _norms(per: Params) -> Tensor:
    return torch.stack([g.flatten(1).square().sum(1) for g in per.values()]).sum(0).sqrt()


def _batch(gan: GAN, m: int, seed: int = 3) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """real [m, 2], fake [B, 2], eps [m, 1] and a mask with a padding row."""
    gen = torch.Generator().manual_seed(seed)
    b = gan.config.batch_size
    real = torch.randn(m, 2, generator=gen) + 0.5
    fake = torch.randn(b, 2, generator=gen)
    eps = torch.rand(m, 1, generator=gen)
    mask = torch.ones(m, dtype=torch.bool)
    mask[-2] = False
    return real, fake, eps, mask


CASES = list(itertools.product(CONTROLS, OBJECTIVES, ["relu", "tanh"]))


@pytest.mark.parametrize("control,objective,act", CASES)
def test_reference_per_sample_gradients_match_the_oracle(
    control: str, objective: str, act: str
) -> None:
    gan = _gan(control, objective, act, dp=DPSGD(clip=0.2, noise_multiplier=1.0))
    s = _trained(gan)
    m = 8  # more real rows than the B = 6 fake rows: row i pairs with fake row i mod B
    real, fake, eps, mask = _batch(gan, m)
    parts = dpsgd.reference_parts(gan, s.d, s.d_buf, real, fake, eps, mask)
    paired = fake[torch.arange(m) % 6]
    want = oracle_per_sample(gan, control, objective, s.d, real, paired, eps)
    for k in s.d:
        assert torch.allclose(parts.per_sample[k], want[k], rtol=0, atol=1e-8), k
    assert torch.allclose(parts.norms, _norms(want), rtol=0, atol=1e-8)
    # The clipped sum and the fake terms, before noise.
    w = torch.clamp(0.2 / _norms(want), max=1.0) * mask
    fake_want = oracle_fake_grad(gan, control, objective, s.d, fake)
    for k in s.d:
        assert torch.allclose(parts.clipped[k], torch.tensordot(w, want[k], 1), atol=1e-8), k
        assert torch.allclose(parts.fake[k], fake_want[k], atol=1e-8), k


@pytest.mark.parametrize("control,objective,act", CASES)
def test_fast_per_sample_gradients_match_the_oracle(control: str, objective: str, act: str) -> None:
    clip = 0.2
    gan = _gan(control, objective, act, dp=DPSGD(clip=clip, noise_multiplier=1.0))
    fast = fastmlp.plan(gan)
    assert fast is not None
    s = _trained(gan)
    m = 8
    real, fake, eps, mask = _batch(gan, m)
    f = fast.critic_flat(batched.stack([s]).d, batched.stack([s]).d_opt)
    grad = torch.empty_like(f.d)
    stats, norms, per = fast.dp_gradient(
        f.d_layers,
        augment(real[None]),
        augment(fake[None]),
        eps[None],
        mask[None],
        grad,
        per_sample=True,
    )
    assert per is not None
    want = oracle_per_sample(gan, control, objective, s.d, real, fake[torch.arange(m) % 6], eps)
    want_flat = fast.dnet.flatten(want)  # [M, P] in the flat layout
    assert torch.allclose(per[0], want_flat, rtol=0, atol=1e-8)
    assert torch.allclose(norms[0], _norms(want), rtol=0, atol=1e-8)
    w = torch.clamp(clip / _norms(want), max=1.0) * mask
    fake_want = fast.dnet.flatten(
        oracle_fake_grad(gan, control, objective, s.d, fake), batch=False
    )[0]
    expected = (w @ want_flat) / gan.config.batch_size + fake_want
    assert torch.allclose(grad[0], expected, rtol=0, atol=1e-8)
    clipped = int(((_norms(want) > clip) & mask).sum())
    assert float(stats["dp_clipped_fraction"][0]) == pytest.approx(clipped / int(mask.sum()))


@pytest.mark.parametrize("control", ["none", "r1", "gp"])
@pytest.mark.parametrize("fast", [False, True])
def test_no_clip_no_noise_all_points_is_the_ordinary_update(control: str, fast: bool) -> None:
    """C = ∞, σ = 0, fixed sampling of B = n points: the DP step is the non-DP step on the same
    batch (the mean gradient over the same points), to float rounding."""
    n = 6
    sgd = OptimizerSpec(name="sgd", lr=0.1)
    dp = DPSGD(clip=INF, noise_multiplier=0.0, sampling="fixed")
    gan_dp = _gan(control, act="tanh", dp=dp, d_opt=sgd)
    gan = _gan(control, act="tanh", d_opt=sgd)
    fastmlp.ENABLED = fast
    assert (fastmlp.plan(gan_dp) is not None) == fast
    s = _trained(gan)
    data = _data(n, seed=9)
    noise = gan_dp.draw(n, torch.Generator().manual_seed(4))
    assert noise.mask is not None and noise.dp_noise is not None
    assert sorted(noise.idx[0].tolist()) == list(range(n))  # every point, once
    real = data[noise.idx[0]]
    fake = gan.G(s.g, noise.z_d[0]).detach()
    if fast:
        outs = []
        for g, extra in ((gan_dp, (noise.mask[None], noise.dp_noise[None])), (gan, ())):
            fm = fastmlp.plan(g)
            assert fm is not None
            st = batched.stack([s])
            f = fm.critic_flat(st.d, st.d_opt)
            eps = noise.eps[None]
            fm.critic_steps_on(f, real[None, None], fake[None, None], eps, 1.0, *extra)
            outs.append(fm.critic_params(f)[0])
        new_dp, new = ({k: v[0] for k, v in o.items()} for o in outs)
    else:
        m, z = noise.mask[0], noise.dp_noise[0]
        new_dp = gan_dp.critic_step_on(s, real, fake, noise.eps[0], 1.0, m, z)[0].d
        new = gan.critic_step_on(s, real, fake, noise.eps[0], 1.0)[0].d
    for k in new:
        assert torch.allclose(new_dp[k], new[k], rtol=0, atol=1e-12), k
        assert not torch.equal(new[k], s.d[k])


@pytest.mark.parametrize("fast", [False, True])
def test_clipped_per_sample_gradients_are_within_the_bound(fast: bool) -> None:
    clip = 0.05
    gan = _gan("gp", act="tanh", dp=DPSGD(clip=clip, noise_multiplier=1.0))
    s = _trained(gan)
    real, fake, eps, mask = _batch(gan, 10)
    if fast:
        fm = fastmlp.plan(gan)
        assert fm is not None
        f = fm.critic_flat(batched.stack([s]).d, batched.stack([s]).d_opt)
        _, norms, per = fm.dp_gradient(
            f.d_layers,
            augment(real[None]),
            augment(fake[None]),
            eps[None],
            mask[None],
            torch.empty_like(f.d),
            per_sample=True,
        )
        assert per is not None
        norms, per_norms = norms[0], per[0].norm(dim=-1)
    else:
        parts = dpsgd.reference_parts(gan, s.d, s.d_buf, real, fake, eps, mask)
        norms, per_norms = parts.norms, _norms(parts.per_sample)
    assert torch.allclose(norms, per_norms, atol=1e-10)
    w, over = dpsgd.clip_factors(norms, clip, mask)
    assert bool(over.any())  # the bound is exercised
    assert float((w * per_norms).max()) <= clip * (1 + 1e-6)


@pytest.mark.parametrize("fast", [False, True])
def test_noise_has_std_sigma_c_over_b(fast: bool) -> None:
    """Many seeded steps of a tiny critic with SGD (lr 1: the update is the gradient): the
    difference between the noisy and the noiseless update is N(0, (σC/B)²) per coordinate."""
    sigma, clip, b, n = 1.7, 0.3, 6, 20
    sgd = OptimizerSpec(name="sgd", lr=1.0)
    spec = NetworkSpec(widths=(3,))
    kw: dict[str, Any] = dict(critic=spec, generator=spec, d_opt=sgd, batch_size=b)
    noisy = _gan("r1", dp=DPSGD(clip, sigma), **kw)
    quiet = _gan("r1", dp=DPSGD(clip, 0.0), **kw)
    s = _trained(noisy)
    data = _data(n)
    steps = 400
    noise = noisy.draw_steps(n, torch.Generator().manual_seed(11), steps)
    assert noise.mask is not None and noise.dp_noise is not None
    fake = noisy.G(s.g, noise.z_d[:, 0].reshape(-1, 2)).detach().view(steps, b, 2)
    reals = data[noise.idx[:, 0]]
    diffs = []
    if fast:
        for gan_ in (noisy, quiet):
            fm = fastmlp.plan(gan_)
            assert fm is not None
            st = batched.stack([s] * steps)  # one "client" per step: all from the same state
            f = fm.critic_flat(st.d, st.d_opt)
            before = f.d.clone()
            fm.critic_steps_on(
                f,
                reals[:, None],
                fake[:, None],
                noise.eps[:, :1],
                1.0,
                noise.mask[:, :1],
                noise.dp_noise[:, :1],
            )
            diffs.append(before - f.d)
        delta = (diffs[0] - diffs[1]).flatten()
    else:
        for t in range(steps):
            args = (reals[t], fake[t], noise.eps[t, 0], 1.0, noise.mask[t, 0])
            z = noise.dp_noise[t, 0]
            a = noisy.critic_step_on(s, *args, z)[0].d
            q = quiet.critic_step_on(s, *args, z)[0].d
            diffs.append(torch.cat([(q[k] - a[k]).flatten() for k in a]))
        delta = torch.cat(diffs)
    want = sigma * clip / b
    count = delta.numel()
    # sd of a sample sd ≈ σ/√(2N); of the mean, σ/√N: 5 of each.
    assert float(delta.std()) == pytest.approx(want, rel=5 / math.sqrt(2 * count))
    assert abs(float(delta.mean())) < 5 * want / math.sqrt(count)


def test_poisson_batches_are_binomial() -> None:
    n, b, draws = 200, 20, 4000
    q = b / n
    idx, mask = draw_batches(n, b, "poisson", torch.Generator().manual_seed(0), (draws,))
    sizes = mask.sum(-1).double()
    mean, var = n * q, n * q * (1 - q)
    assert float(sizes.mean()) == pytest.approx(mean, abs=5 * math.sqrt(var / draws))
    # sd of a sample variance: √((μ4 − σ⁴)/N), a binomial's μ4 = npq(1 + 3(n − 2)pq).
    mu4 = var * (1 + 3 * (n - 2) * q * (1 - q))
    assert float(sizes.var()) == pytest.approx(var, abs=5 * math.sqrt((mu4 - var**2) / draws))
    # The mask is a prefix; the selected indices distinct and in range; M the largest batch.
    assert idx.shape[-1] == int(sizes.max())
    assert torch.equal(mask, torch.arange(idx.shape[-1]) < sizes[:, None])
    for row, k in zip(idx[:50], sizes[:50].long(), strict=True):
        chosen = row[:k]
        assert len(set(chosen.tolist())) == int(k) and all(0 <= i < n for i in chosen.tolist())
    # Each point joins with probability q, independently of the others.
    freq = torch.zeros(n)
    freq.index_add_(0, idx[mask], torch.ones(int(mask.sum())))
    assert float((freq / draws - q).abs().max()) < 5 * math.sqrt(q * (1 - q) / draws)


def test_fixed_batches_are_distinct_points() -> None:
    n, b, draws = 30, 7, 3000
    idx, mask = draw_batches(n, b, "fixed", torch.Generator().manual_seed(0), (draws,))
    assert idx.shape == (draws, b) and bool(mask.all())
    assert all(len(set(r.tolist())) == b for r in idx)
    assert int(idx.min()) >= 0 and int(idx.max()) < n
    freq = torch.bincount(idx.flatten(), minlength=n).double() / draws
    p = b / n
    assert float((freq - p).abs().max()) < 5 * math.sqrt(p * (1 - p) / draws)


def test_batch_larger_than_the_data_is_refused() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        draw_batches(5, 6, "poisson", torch.Generator(), (1,))
    with pytest.raises(ValueError, match="exceeds"):
        draw_batches(5, 6, "fixed", torch.Generator(), (1,))


def _max_diff(a: GANState, b: GANState) -> float:
    return max(
        float((getattr(a, g)[k] - getattr(b, g)[k]).abs().max())
        for g in ("g", "d", "g_opt", "d_opt")
        for k in getattr(a, g)
    )


@pytest.mark.parametrize("sampling", ["poisson", "fixed"])
@pytest.mark.parametrize("control", ["r1", "gp"])
def test_reproducible_and_sequential_equals_batched(sampling: str, control: str) -> None:
    dp = DPSGD(clip=0.5, noise_multiplier=1.1, sampling=sampling)
    gan = _gan(control, act="tanh", dp=dp, n_critic=2)
    datas = [_data(n, seed=n) for n in (40, 25, 33)]
    steps = [4, 3, 70]  # ragged, and past one noise block (64)

    def gens() -> list[torch.Generator]:
        return [torch.Generator().manual_seed(17 + i) for i in range(3)]

    hists = []
    for fast in (False, True):
        fastmlp.ENABLED = fast
        runs = [
            gan.train(gan.init_state(0), x, t, g)
            for x, t, g in zip(datas, steps, gens(), strict=True)
        ]
        seq = [r[0] for r in runs]
        hists.append([r[1] for r in runs])
        again = gan.train(gan.init_state(0), datas[0], steps[0], gens()[0])[0]
        assert _max_diff(seq[0], again) == 0.0  # same seed, same result
        st, means = batched.train_batched(
            gan,
            batched.stack([gan.init_state(0)] * 3),
            batched.pad_data(datas),
            [len(x) for x in datas],
            gens(),
            steps,
        )
        assert "dp_clipped_fraction" in means
        for a, b in zip(seq, batched.unstack(st), strict=True):
            assert _max_diff(a, b) < 1e-12
        if not fast:
            ref = seq
    fastmlp.ENABLED = True
    for a, b in zip(ref, seq, strict=True):  # and the reference and the fast path agree
        assert _max_diff(a, b) < 1e-10
    for ha, hb in zip(*hists, strict=True):  # statistics included
        for ra, rb in zip(ha, hb, strict=True):
            assert ra.keys() == rb.keys()
            assert all(abs(ra[k] - rb[k]) < 1e-10 for k in ra), (ra, rb)
            assert "dp_clipped_fraction" in ra


def test_server_held_critic_steps_reference_equals_fast() -> None:
    """`split.critic_steps` (one client, the reference step) and `FastMLP.critic_steps_on`
    (stacked) under DP, on batches drawn by `draw_batches`."""
    from fedgan.simulator.gan import split

    gan = _gan("r1", act="tanh", dp=DPSGD(0.4, 1.2), n_critic=2)
    s = _trained(gan)
    data, gen = _data(30), torch.Generator().manual_seed(8)
    idx, masks = draw_batches(30, 6, "poisson", gen, (2,))
    m = idx.shape[-1]
    reals, fakes = data[idx], torch.randn(2, 6, 2, generator=gen)
    eps = torch.rand(2, m, 1, generator=gen)
    noise = torch.randn(2, dpsgd.noise_size(gan.critic), generator=gen)
    ref, st = split.critic_steps(gan, s, reals, fakes, eps, 0.5, masks, noise)
    fm = fastmlp.plan(gan)
    assert fm is not None
    stacked = batched.stack([s])
    f = fm.critic_flat(stacked.d, stacked.d_opt)
    sf = fm.critic_steps_on(f, reals[None], fakes[None], eps[None], 0.5, masks[None], noise[None])
    d = fm.critic_params(f)[0]
    assert max(float((ref.d[k] - d[k][0]).abs().max()) for k in d) < 1e-12
    assert all(abs(float(st[k]) - float(sf[k][0])) < 1e-12 for k in st)
    with pytest.raises(ValueError, match="dp_noise"):
        fm.critic_steps_on(f, reals[None], fakes[None], eps[None], 0.5, masks[None])


def test_dp_draws_leave_the_ordinary_stream_alone() -> None:
    plain = _gan()
    noise = plain.draw_steps(30, torch.Generator().manual_seed(1), 3)
    assert noise.mask is None and noise.dp_noise is None
    want = torch.randint(30, (3, 1, 6), generator=torch.Generator().manual_seed(1))
    assert torch.equal(noise.idx, want)
    dp = _gan(dp=DPSGD(1.0, 1.0)).draw_steps(30, torch.Generator().manual_seed(1), 3)
    assert dp.mask is not None and dp.dp_noise is not None
    assert dp.dp_noise.shape == (3, 1, dpsgd.noise_size(plain.critic))


def test_missing_noise_is_an_error() -> None:
    gan = _gan(dp=DPSGD(1.0, 1.0))
    s = gan.init_state(0)
    x = _data(6)
    with pytest.raises(ValueError, match="dp_noise"):
        gan.critic_step_on(s, x, x, torch.rand(6, 1), 1.0)


def test_dpsgd_validates() -> None:
    with pytest.raises(ValueError, match="clip"):
        DPSGD(clip=0.0, noise_multiplier=1.0)
    with pytest.raises(ValueError, match="noise_multiplier"):
        DPSGD(clip=1.0, noise_multiplier=-1.0)
    with pytest.raises(ValueError, match="sampling"):
        DPSGD(clip=1.0, noise_multiplier=1.0, sampling="shuffle")  # type: ignore[arg-type]
    assert DPSGD(clip=INF, noise_multiplier=0.0).noise_std == 0.0


def test_dp_problems_refuses_batch_statistics() -> None:
    dp = DPSGD(1.0, 1.0)
    assert dp_problems(tiny_config(dp=dp)) == []
    conv = tiny_config(dp=dp, critic=NetworkSpec(kind="conv", widths=(4, 8)))
    assert dp_problems(conv) == []
    two = tiny_config(dp=dp, critic=NetworkSpec(kind="two_branch"), lipschitz="spectral_norm")
    assert dp_problems(two) == []
    for bn in (
        tiny_config(dp=dp, critic=NetworkSpec(kind=f"{__name__}:bn_critic")),
        tiny_config(critic=NetworkSpec(kind=f"{__name__}:bn_critic")),  # dp set later
    ):
        problems = dp_problems(bn)
        assert len(problems) == 1
        assert problems[0].startswith("gan.critic.kind:") and "batch statistics" in problems[0]


def test_reference_step_runs_for_conv_and_spectral_norm() -> None:
    """The reference path is general: per-sample gradients of any critic (spectral norm's
    buffers are read, not clipped)."""
    gan = GAN(
        tiny_config(
            latent_dim=4,
            generator=NetworkSpec(kind="conv", widths=(4, 4)),
            critic=NetworkSpec(kind="conv", widths=(4, 4)),
            lipschitz="spectral_norm",
            batch_size=4,
            dp=DPSGD(0.5, 1.0),
        ),
        data_dim=64,
        image_shape=(1, 8, 8),
    )
    assert fastmlp.plan(gan) is None
    x = torch.randn(12, 64, generator=torch.Generator().manual_seed(0)).tanh()
    s, hist = gan.train(gan.init_state(0), x, 2, torch.Generator().manual_seed(1))
    assert all(math.isfinite(v) for row in hist for v in row.values())
    assert 0.0 <= hist[-1]["dp_clipped_fraction"] <= 1.0


def test_noise_layout_covers_every_parameter_once() -> None:
    """`dp_noise` order: every critic parameter exactly once, a layer's weights and bias as
    [W | b] rows (the fast step's flat layout: no reordering there)."""
    from fedgan.simulator.gan.networks import ConvCritic, MLPCritic, TwoBranchCritic

    for critic in (
        MLPCritic(2, (3, 4), "relu", True),
        TwoBranchCritic(2, (3,), "tanh", False),
        ConvCritic((1, 8, 8), (2, 3), "relu", False),
    ):
        p = dpsgd.noise_size(critic)
        parts = dpsgd.unflatten(torch.arange(2 * p).view(2, p), critic)
        shapes = {k: v.shape for k, v in critic.named_parameters()}
        assert {k: v.shape[1:] for k, v in parts.items()} == shapes
        seen = torch.cat([v[0].flatten() for v in parts.values()]).sort().values
        assert torch.equal(seen, torch.arange(p))
    mlp = MLPCritic(2, (3,), "relu", False)
    parts = dpsgd.unflatten(torch.arange(dpsgd.noise_size(mlp)), mlp)
    assert parts["net.0.weight"].tolist() == [[0, 1], [3, 4], [6, 7]]
    assert parts["net.0.bias"].tolist() == [2, 5, 8]
