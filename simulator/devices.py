"""Which torch device a scenario's `device: cpu | cuda | auto` means on this machine."""

from __future__ import annotations

import torch

DEVICES = ("cpu", "cuda", "auto")


def resolve_device(spec: str | torch.device = "cpu") -> torch.device:
    """torch.device for "cpu", "cuda[:i]" or "auto" (cuda when available, else cpu).

    Raises ValueError naming the allowed values for anything else, and when cuda is asked for
    on a machine without one (nothing silently falls back from an explicit request)."""
    if isinstance(spec, torch.device):
        spec = str(spec)
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"device: {spec} was asked for but torch sees no CUDA device here; "
                "use device: cpu or auto"
            )
        return torch.device(spec)
    raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {spec!r}")
