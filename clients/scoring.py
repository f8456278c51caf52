"""How a client scores a generator on its own held-out data.

Two scores, for two readers:
- `served_coverage` answers the evaluate message: the global evaluation's samples against the
  client's held-out points, radii from the pooled held-out set — the per-client view of who is
  served (`simulator.metrics.forgetting`);
- `evaluate_locally` / `local_evaluation` score the generator a client *received* in a train
  round, on its own points with as many samples (`LocalEvaluation`, `local.*`): the fairness
  weightings' input, for every client of a round at once on the vectorized engine
  (`local_evaluations`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import torch
from fedgan.clients.requests import TrainRequest
from fedgan.simulator import client_view
from fedgan.simulator.gan import batched
from fedgan.simulator.gan.train import GAN, GANState
from fedgan.simulator.messages import ClientCoverage, LocalEvaluation
from fedgan.simulator.metrics import expected_coverage, prdc
from fedgan.simulator.metrics.small_sets import recall_coverage_terms
from fedgan.simulator.prepare import FederatedData, pooled_reference
from fedgan.simulator.scenario import Scenario
from fedgan.simulator.seeding import torch_generator


def evaluate_locally(
    s: Scenario, gan: GAN, state: GANState, data: FederatedData, client: int, round_: int
) -> LocalEvaluation:
    """Global generator vs client `client`'s held-out split, k-NN radii from those points."""
    n = len(data.client_held[client])
    fake = None
    if n > s.evaluation.k:
        fake = gan.sample(state, n, torch_generator(s.seed, "client-eval", client, round_)).numpy()
    return local_evaluation(s, data, client, fake)


def served_coverage(
    s: Scenario, gan: GAN, state: GANState, data: FederatedData, client: int, round_: int
) -> ClientCoverage:
    """The evaluate message's answer: `client_coverage` of the samples the global evaluation
    scores at `round_` (`simulator.evaluate.generated`: `state`'s generator, same count, same
    noise stream)."""
    fake, embedded = _global_samples(s, gan, state, round_)
    check_finite(fake, client)
    return client_view.client_coverage(s, data, client, embedded)


def client_coverage(
    s: Scenario, data: FederatedData, client: int, fake: np.ndarray
) -> ClientCoverage:
    """`fake` [M, d] against client `client`'s held-out points, each with its k-NN radius
    among the pooled held-out set (`simulator.metrics.forgetting.coverage_against`), in the
    space the global evaluation uses; per-group counts."""
    return client_view.client_coverage(s, data, client, pooled_reference(s).embed(fake))


_SAMPLES: dict[tuple[str, int, str], tuple[np.ndarray, np.ndarray]] = {}
"""The last evaluation's samples and their embedding, by (scenario, round, generator digest):
every client of a process scores the same samples, so they are drawn (and, for images, passed
through the classifier) once, not once per client."""


def _global_samples(
    s: Scenario, gan: GAN, state: GANState, round_: int
) -> tuple[np.ndarray, np.ndarray]:
    from fedgan.simulator.evaluate import generated

    digest = hashlib.blake2b(digest_size=16)
    for group in (state.g, state.g_ema):
        for name in sorted(group):
            digest.update(name.encode())
            digest.update(group[name].detach().cpu().numpy().tobytes())
    key = (s.to_json(), round_, digest.hexdigest())
    if key not in _SAMPLES:
        fake = generated(s, gan, state, round_)
        embedded = pooled_reference(s).embed(fake) if np.isfinite(fake).all() else fake
        _SAMPLES.clear()  # one evaluation at a time: keep memory flat
        _SAMPLES[key] = (fake, embedded)
    return _SAMPLES[key]


def local_evaluation(
    s: Scenario, data: FederatedData, client: int, fake: np.ndarray | None
) -> LocalEvaluation:
    """`fake` [n_held, d] (None when the client holds ≤ k points) against the client's held-out
    split: PRDC totals and per-group hit counts."""
    idx = data.client_held[client]
    k = s.evaluation.k
    if fake is None:  # radii need k neighbours: too few held-out points to say anything
        n, other_n = data.counts(idx)
        return LocalEvaluation(
            float("nan"),
            float("nan"),
            float("nan"),
            len(idx),
            [0] * len(n),
            [0] * len(n),
            n,
            [0] * len(other_n),
            [0] * len(other_n),
            other_n,
        )
    check_finite(fake, client)
    # In the space the evaluation compares in (images: the feature classifier's embedding;
    # other data: the data themselves), so a weighting reads what the tables read.
    embed = pooled_reference(s).embed
    res = prdc(embed(data.train.X[idx]), embed(fake), k=k)
    return _from_terms(s, data, client, res.recall_per_real, res.coverage_per_real)


def check_finite(fake: np.ndarray, client: int) -> None:
    if not np.isfinite(fake).all():
        raise FloatingPointError(f"client {client}: the generator produced non-finite points")


def _from_terms(
    s: Scenario,
    data: FederatedData,
    client: int,
    recall_per_real: np.ndarray,
    coverage_per_real: np.ndarray,
) -> LocalEvaluation:
    """A client's evaluation from PRDC's per-real recall and coverage terms [n_held]."""
    idx = data.client_held[client]
    recall_hits, other_recall_hits = data.counts(idx, recall_per_real)
    coverage_hits, other_coverage_hits = data.counts(idx, coverage_per_real)
    group_n, other_group_n = data.counts(idx)
    return LocalEvaluation(
        recall=float(recall_per_real.mean()),
        coverage=float(coverage_per_real.mean()),
        expected_coverage=expected_coverage(len(idx), len(idx), s.evaluation.k),
        n_real=len(idx),
        recall_hits=recall_hits,
        coverage_hits=coverage_hits,
        group_n=group_n,
        other_recall_hits=other_recall_hits,
        other_coverage_hits=other_coverage_hits,
        other_group_n=other_group_n,
    )


def local_evaluations(
    s: Scenario,
    gan: GAN,
    data: FederatedData,
    generator: dict[str, torch.Tensor],
    requests: Sequence[TrainRequest],
    device: torch.device | str,
    dense: bool | None = None,
) -> list[LocalEvaluation | Exception]:
    """`evaluate_locally` for many clients: every client's samples from one vmapped generator
    pass on `device` (each from its own noise stream), then PRDC per client — set by set with
    k-d trees, or (`dense`, default on a GPU) all sets in one dense batch. `generator`: the
    clients' stacked generator parameters [C, ...] (the EMA ones if kept, as `GAN.sample`)."""
    k, L = s.evaluation.k, gan.config.latent_dim
    sizes = [len(data.client_held[r.client]) for r in requests]
    todo = [i for i, n in enumerate(sizes) if n > k]
    fakes: dict[int, np.ndarray] = {}
    if todo:
        z = [
            torch.randn(
                sizes[i],
                L,
                generator=torch_generator(
                    s.seed, "client-eval", requests[i].client, requests[i].round
                ),
            )
            for i in todo
        ]
        rows = torch.tensor(todo, device=next(iter(generator.values())).device)
        g = {key: v.index_select(0, rows).to(device) for key, v in generator.items()}
        with torch.no_grad():
            out = torch.func.vmap(gan.G)(g, batched.pad_data(z, device)).cpu().numpy()
        fakes = {i: out[j, : sizes[i]] for j, i in enumerate(todo)}
    results: list[LocalEvaluation | Exception] = []
    if not (torch.device(device).type != "cpu" if dense is None else dense):
        # On a CPU a k-d tree per small set beats one dense batch.
        for i, r in enumerate(requests):
            try:
                results.append(local_evaluation(s, data, r.client, fakes.get(i)))
            except Exception as exc:  # noqa: BLE001 - this client's failure, in its slot
                results.append(exc)
        return results
    # On a GPU: every client's set decided in one dense batch (identical per-point answers).
    ok: list[int] = []
    slots: dict[int, LocalEvaluation | Exception] = {}
    for i, r in enumerate(requests):
        try:
            if i in fakes:
                check_finite(fakes[i], r.client)
                ok.append(i)
            else:
                slots[i] = local_evaluation(s, data, r.client, None)
        except Exception as exc:  # noqa: BLE001 - this client's failure, reported in its slot
            slots[i] = exc
    embed = pooled_reference(s).embed  # the evaluation's space, as local_evaluation
    reals = [embed(data.train.X[data.client_held[requests[i].client]]) for i in ok]
    terms = recall_coverage_terms(reals, [embed(fakes[i]) for i in ok], k, device)
    for i, (rec, cov) in zip(ok, terms, strict=True):
        slots[i] = _from_terms(s, data, requests[i].client, rec, cov)
    return [slots[i] for i in range(len(requests))]
