"""Every client's private arrays (a private critic, optimizer moments), held compactly.

One stacked array per key, [n_clients, ...], allocated on the first write: 1,000 clients'
private critics cost 1,000 × their bytes and no per-client object overhead. When the stack
would exceed a memory budget it lives in memory-mapped files instead (the OS pages in only the
clients being trained), so a run with more clients than RAM still works.

Why not keep private state in each node's `context.state` as Flower does: an `ArrayRecord` per
client per round means a serialization per array, and a Python object per array per client.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

Arrays = dict[str, np.ndarray]


class PrivateStore:
    """Private arrays of `n_clients` clients; all clients share keys, shapes and dtypes."""

    def __init__(
        self, n_clients: int, budget_bytes: int = 2 * 2**30, spill_dir: str | Path | None = None
    ) -> None:
        if n_clients < 1:
            raise ValueError(f"n_clients must be >= 1, got {n_clients}")
        self.n_clients = n_clients
        self.budget_bytes = int(budget_bytes)
        self._spill_parent = Path(spill_dir) if spill_dir is not None else None
        self._spill_dir: Path | None = None
        self._arrays: dict[str, np.ndarray] = {}
        self._has = np.zeros(n_clients, dtype=bool)

    @property
    def nbytes(self) -> int:
        """Bytes held for all clients (in memory or on disk)."""
        return int(sum(a.nbytes for a in self._arrays.values()))

    @property
    def spilled(self) -> bool:
        """Whether the arrays live in memory-mapped files."""
        return self._spill_dir is not None

    def has(self, client: int) -> bool:
        return bool(self._has[client])

    def get(self, client: int) -> Arrays | None:
        """Copies of `client`'s arrays, or None if it has none yet."""
        if not self._has[client]:
            return None
        return {k: np.array(a[client]) for k, a in self._arrays.items()}

    def put(self, client: int, arrays: Arrays) -> None:
        """Store `client`'s arrays (copied). Keys, shapes and dtypes must match earlier puts."""
        if not arrays:
            return
        if not self._arrays:
            self._allocate(arrays)
        if set(arrays) != set(self._arrays):
            raise ValueError(
                f"client {client}: private keys {sorted(arrays)} differ from the store's "
                f"{sorted(self._arrays)}"
            )
        for k, v in arrays.items():  # check everything first: a refused put writes nothing
            slot = self._arrays[k]
            if v.shape != slot.shape[1:] or v.dtype != slot.dtype:
                raise ValueError(
                    f"client {client}: {k} has shape {v.shape} {v.dtype}, the store holds "
                    f"{slot.shape[1:]} {slot.dtype}"
                )
        for k, v in arrays.items():
            self._arrays[k][client] = v
        self._has[client] = True

    def _allocate(self, first: Arrays) -> None:
        total = self.n_clients * sum(v.nbytes for v in first.values())
        if total <= self.budget_bytes:
            self._arrays = {
                k: np.zeros((self.n_clients, *v.shape), v.dtype) for k, v in first.items()
            }
            return
        self._spill_dir = Path(tempfile.mkdtemp(prefix="private-", dir=self._spill_parent))
        for i, (k, v) in enumerate(first.items()):
            shape = (self.n_clients, *v.shape)
            self._arrays[k] = np.lib.format.open_memmap(
                self._spill_dir / f"{i}.npy", mode="w+", dtype=v.dtype, shape=shape
            )

    def close(self) -> None:
        """Drop everything (and the spill files)."""
        self._arrays = {}
        self._has[:] = False
        if self._spill_dir is not None:
            shutil.rmtree(self._spill_dir, ignore_errors=True)
            self._spill_dir = None
