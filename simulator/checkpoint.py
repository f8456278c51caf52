"""Resume checkpoints: everything a federated run needs to go on after round r, in one file.

`checkpoints/resume-<r>.npz` holds the global arrays after round r, every client's private
arrays (private networks, optimizer moments), the arrays the server keeps (the generator EMA),
the protocol's and strategy's state and the server process's global RNG states;
`checkpoints/latest.json` points at it. Both are written atomically (temporary file + rename)
and the pointer only after its file, so a run killed at any moment leaves either the previous
checkpoint or the new one. Only the latest is kept: it holds every client's private state,
which can be large.

Portable (format 2): every array is an `.npz` member read with `allow_pickle=False`; everything
else is JSON (`simulator.statecodec`: plain data, numpy scalars, registered types such as
Flower's records, by our own tag, never by module path). No pickle is ever loaded: a format-1
checkpoint (which held a pickle) is refused with its version named.
"""

from __future__ import annotations

import io
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fedgan.simulator import statecodec
from fedgan.simulator.store import atomic_write_bytes, atomic_write_text

FORMAT = 2
POINTER = "latest.json"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read (names the file and what is wrong)."""


def rng_state() -> dict[str, Any]:
    """The process-global RNG states (Python, numpy, torch CPU). The simulator itself draws
    every random number from a stream derived statelessly from (seed, purpose, keys), so these
    only matter to plug-ins that use a global RNG."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state().numpy().copy(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(torch.from_numpy(np.asarray(state["torch"], dtype=np.uint8)))


@dataclass
class ResumeState:
    """What the server loop carries from round r to round r+1.

    `arrays`: the global arrays (`prefix.name` → ndarray) after round r, in record order;
    `clients`: each client's private arrays by partition id (only clients that have any);
    `strategy`: the strategy's attributes (see `server.resume.strategy_state`);
    `rng`: `rng_state()` at the end of round r; `notes`: what could not be saved;
    `server`: arrays the server keeps beside the global ones (the generator EMA).
    """

    round: int
    arrays: dict[str, np.ndarray]
    clients: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    strategy: dict[str, Any] = field(default_factory=dict)
    rng: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    server: dict[str, np.ndarray] = field(default_factory=dict)


def _name(round_: int) -> str:
    return f"resume-{round_:06d}.npz"


def save(run_dir: Path, st: ResumeState) -> Path:
    """Write `st` as the run's latest checkpoint (atomic), then drop older ones."""
    folder = run_dir / "checkpoints"
    for k in list(st.arrays) + list(st.server) + [a for c in st.clients.values() for a in c]:
        if "/" in k:  # npz members are file names
            raise ValueError(f"array name {k!r} contains '/'")
    tree, state_arrays = statecodec.encode({"strategy": st.strategy, "rng": st.rng})
    meta = {
        "format": FORMAT,
        "round": st.round,
        "arrays": list(st.arrays),
        "server": list(st.server),
        "clients": {str(p): list(a) for p, a in sorted(st.clients.items())},
        "notes": st.notes,
        "state": tree,
    }
    members: dict[str, np.ndarray] = {f"global/{k}": v for k, v in st.arrays.items()}
    members.update({f"server/{k}": v for k, v in st.server.items()})
    for pid, arrays in st.clients.items():
        members.update({f"client/{pid}/{k}": v for k, v in arrays.items()})
    members.update({f"state/{k}": v for k, v in state_arrays.items()})
    members["meta"] = np.frombuffer(json.dumps(meta, allow_nan=False).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **members)  # type: ignore[arg-type]
    path = folder / _name(st.round)
    atomic_write_bytes(path, buf.getvalue())
    atomic_write_text(
        folder / POINTER, json.dumps({"format": FORMAT, "round": st.round, "file": path.name})
    )
    for old in folder.glob("resume-*.npz"):  # leftovers too (a kill between write and pointer)
        if old.name != path.name:
            old.unlink(missing_ok=True)
    return path


def load_latest(run_dir: Path) -> ResumeState | None:
    """The run's latest checkpoint, or None when it has none yet."""
    pointer = run_dir / "checkpoints" / POINTER
    if not pointer.is_file():
        return None
    try:
        ref = json.loads(pointer.read_text())
        path = pointer.parent / str(ref["file"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{pointer}: unreadable checkpoint pointer ({exc})") from exc
    if ref.get("format") != FORMAT:
        raise CheckpointError(
            f"{pointer}: checkpoint format {ref.get('format')!r}; this version reads format "
            f"{FORMAT} only (format 1 held a pickle, which is never loaded: run the scenario "
            "again, or resume it with the fedgan that wrote it)"
        )
    if Path(path.name) != Path(str(ref["file"])):
        raise CheckpointError(f"{pointer}: the checkpoint must lie beside it, got {ref['file']!r}")
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(z["meta"].tobytes())
            if meta.get("format") != FORMAT:
                raise CheckpointError(f"{path}: format {meta.get('format')!r}, not {FORMAT}")
            arrays = {k: z[f"global/{k}"] for k in meta["arrays"]}
            server = {k: z[f"server/{k}"] for k in meta.get("server", [])}
            clients = {
                int(p): {k: z[f"client/{p}/{k}"] for k in keys}
                for p, keys in meta["clients"].items()
            }
            members = {n[len("state/") :]: z[n] for n in z.files if n.startswith("state/")}
            state = statecodec.decode(meta["state"], members)
    except (OSError, ValueError, KeyError) as exc:  # StateError is a ValueError
        raise CheckpointError(f"{path}: unreadable checkpoint ({exc})") from exc
    return ResumeState(
        round=int(meta["round"]),
        arrays=arrays,
        clients=clients,
        strategy=state["strategy"],
        rng=state["rng"],
        notes=list(meta.get("notes", [])),
        server=server,
    )
