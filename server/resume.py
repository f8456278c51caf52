"""The checkpoint step and its inverse: what a resumed run needs after round r, saved at the end
of every evaluation round, and put back when the run continues.

A checkpoint holds the protocol's state (`Protocol.state`: the global model, server-held
arrays, its data attributes), every client's private state (collected with `ask: private`
queries from the clients sent a train message since the last one) and the server process's
global RNG states (see `simulator.checkpoint`).
"""

from __future__ import annotations

from fedgan.server.nodes import collect_private, restore_private
from fedgan.server.protocols import ProtocolState
from fedgan.server.run import Run
from fedgan.simulator.checkpoint import ResumeState, rng_state, set_rng_state
from fedgan.simulator.checkpoint import save as save_resume_state

__all__ = ["Run", "checkpoint", "restore"]


def checkpoint(run: Run, rnd: int) -> None:
    """Write the resume checkpoint of round `rnd`. Clients whose private state could not be
    collected keep their earlier one and are asked again next time."""
    assert run.s.federation is not None
    timeout = run.s.federation.timeout
    got, failed = collect_private(run.grid, run.pid_node, sorted(run.touched), timeout)
    run.private.update(got)
    run.touched = set(failed)
    run.private_round.update({p: rnd for p in got})
    st = run.protocol.state()
    notes = []
    if failed:
        notes.append(f"private state of clients {failed} is from an earlier checkpoint")
    if st.skipped:
        notes.append(f"strategy attributes not saved (cannot be pickled as data): {st.skipped}")
    if notes:
        run.store.event("checkpoint_incomplete", round=rnd, detail="; ".join(notes))
    save_resume_state(
        run.store.path,
        ResumeState(
            rnd, st.arrays, run.private, st.data, rng_state(), notes, server=dict(st.server)
        ),
    )


def restore(run: Run, ckpt: ResumeState) -> None:
    """Take up checkpoint `ckpt`: the protocol's state, the clients' private state (sent back
    with `ask: restore`), the global RNG states."""
    assert run.s.federation is not None
    run.protocol.load_state(ProtocolState(dict(ckpt.arrays), dict(ckpt.server), ckpt.strategy))
    run.private = dict(ckpt.clients)
    # A checkpoint does not say which round each copy is from: the checkpoint's round (the
    # copies of clients named in its `checkpoint_incomplete` event are older).
    run.private_round = {p: ckpt.round for p in run.private}
    failed = restore_private(run.grid, run.pid_node, run.private, run.s.federation.timeout)
    if failed:
        run.store.event("clients_not_restored", round=ckpt.round, clients=failed)
    set_rng_state(ckpt.rng)
