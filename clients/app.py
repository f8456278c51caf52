"""The Flower ClientApp: local GAN training and local evaluation on one partition.

A thin adapter over `clients.training`, `clients.scoring` and `clients.answers`, speaking the
message format of `simulator.messages` through `wire`. What is not federated (a private critic,
both optimizers' moments) stays in the node's context state (`wire.records.PRIVATE_STATE`)
across rounds.
"""

from __future__ import annotations

import time

from fedgan.clients.answers import client_step
from fedgan.clients.instrumentation import keep
from fedgan.clients.scoring import served_coverage
from fedgan.clients.training import client_train
from fedgan.simulator.messages import EvaluateReply
from fedgan.simulator.prepare import federated_data, initial_state, make_gan
from fedgan.wire.codec import (
    answer_query,
    arrays_of,
    partition_id,
    read_evaluate,
    read_step,
    read_train,
    reply,
    step_reply,
    train_reply,
)
from fedgan.wire.records import from_record, load_private, scenario_from, store_private, to_record
from flwr.app import Context, Message
from flwr.clientapp import ClientApp

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Receive the global networks, train locally, reply with the federated ones — or, for a
    server-held generator (mdgan, uagan), one critic step and the answer on the sent batch."""
    t0 = time.perf_counter()
    s = scenario_from(context.run_config)
    step = read_step(msg)
    if step is not None:
        received = from_record(arrays_of(msg))
        pid = partition_id(context)
        done = client_step(s, pid, step, received, load_private(context))
        store_private(context, done.private)
        private = s.privacy is not None
        if private:
            keep(context.run_config, pid, step.round, "step", done.reply.metrics())
        seconds = time.perf_counter() - t0
        return step_reply(msg, done.reply, to_record(done.arrays), seconds, withhold=private)
    ins = read_train(msg)
    received = from_record(arrays_of(msg))
    pid = partition_id(context)
    update = client_train(
        s, pid, ins.round, received, load_private(context), ins.proximal_mu, ins.critic_only
    )
    store_private(context, update.private)
    if s.privacy is not None:
        keep(context.run_config, pid, ins.round, "train", update.reply.metrics())
    seconds = time.perf_counter() - t0
    return train_reply(
        msg, update.reply, to_record(update.arrays), seconds, withhold=s.privacy is not None
    )


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """The sent generator's evaluation samples against this client's held-out split: which
    points are covered, with radii from the pooled held-out set (counts per group)."""
    s = scenario_from(context.run_config)
    pid = partition_id(context)
    round_ = read_evaluate(msg).round
    data = federated_data(s)
    gan = make_gan(s, data)
    state = initial_state(s, gan)
    received = from_record(arrays_of(msg))
    private = load_private(context)
    if not received and private is not None:  # the generator is private here
        state = state.load_arrays(private)
    state = state.load_arrays(received)
    ev = served_coverage(s, gan, state, data, pid, round_)
    return reply(msg, EvaluateReply(pid, ev).metrics())


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Answer the server: this node's partition id (Flower's node ids are random), its private
    state for a checkpoint (`ask: private`) or put a checkpointed one back (`ask: restore`).

    The one place private state crosses to the server: an engine that keeps it elsewhere syncs
    it into the context around this handler (or answers these queries the same way itself).
    """
    return answer_query(
        msg,
        partition_id(context),
        lambda: load_private(context),
        lambda arrays: store_private(context, arrays),
    )
