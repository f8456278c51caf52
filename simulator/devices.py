"""Where tensor work runs ("cpu", "cuda", "auto" → ``torch.device``) and its GEMM precision."""

from __future__ import annotations

from collections.abc import Callable

import torch

DEVICE_CHOICES = ("cpu", "cuda", "auto")
"""Device names a scenario may give; ``"cuda:<index>"`` also names one GPU of several."""


def resolve_device(spec: str | torch.device, *, field: str = "device") -> torch.device:
    """The torch device for `spec`: "cpu", "cuda", "cuda:<index>" or "auto" (a GPU if any).

    Parameters
    ----------
    spec : str or torch.device
        A device name, or a device (checked the same way).
    field : str
        Name of the setting, for the error messages (e.g. "evaluation.device").

    Raises
    ------
    ValueError
        For any other name or device type, or when a GPU is asked for and torch sees none
        (nothing falls back to the CPU silently: "auto" is the way to say "a GPU if any").
    """
    if isinstance(spec, torch.device):
        device = spec
    elif spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif isinstance(spec, str) and (spec in DEVICE_CHOICES or spec.startswith("cuda:")):
        try:
            device = torch.device(spec)
        except RuntimeError as exc:  # "cuda:x", "cuda:-1"
            raise ValueError(f"{field}: {spec!r} is not a device name ({exc})") from exc
    else:
        raise ValueError(
            f"{field} must be one of 'cpu', 'cuda', 'cuda:<index>' or 'auto', got {spec!r}"
        )
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ValueError(f"{field}: only cpu and cuda devices are supported, got {str(device)!r}")
    if not torch.cuda.is_available():
        cuda = torch.version.cuda
        build = "a CPU-only build" if cuda is None else f"built for CUDA {cuda}"
        raise ValueError(
            f"{field}: {str(device)!r} was asked for, but torch sees no CUDA device "
            f"(torch {torch.__version__}, {build}); "
            "use 'cpu', or 'auto' for a GPU when there is one"
        )
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise ValueError(
            f"{field}: {str(device)!r} was asked for, but torch sees {count} CUDA device(s) "
            f"(indices 0..{count - 1})"
        )
    return device


def _setting(read: Callable[[], object]) -> str | None:
    """A precision switch as a string: "none" where this torch lacks it, None where it refuses."""
    try:
        return str(read())
    except AttributeError:  # a torch older than this switch: the other switches decide
        return "none"
    except RuntimeError:  # torch refuses to answer once its legacy and new APIs were mixed
        return None


def float32_matmul_is_ieee(device: torch.device) -> bool:
    """Whether float32 matrix products on `device` run in true float32 (not TF32 or bfloat16).

    torch has two sets of switches: the legacy ``torch.set_float32_matmul_precision`` (with
    ``torch.backends.cuda.matmul.allow_tf32``, which also reflects the environment override
    ``TORCH_ALLOW_TF32_CUBLAS_OVERRIDE``) and the per-backend ``fp32_precision`` ("ieee", "tf32",
    "bf16", or "none" = inherit the generic ``torch.backends.fp32_precision``). Any switch that
    allows reduced precision for this device's matmuls means False, and so does a switch that
    cannot be read: callers then use float64, which is exact and only slower.
    """
    if device.type == "cuda":
        backend_value = _setting(lambda: torch.backends.cuda.matmul.fp32_precision)
    else:
        backend_value = _setting(lambda: torch.backends.mkldnn.matmul.fp32_precision)  # type: ignore[attr-defined]
    if backend_value == "none":
        backend_value = _setting(lambda: torch.backends.fp32_precision)  # type: ignore[attr-defined]
    if backend_value not in ("ieee", "none"):
        return False
    # Raises (None) only where the new switches were used, which were read above.
    legacy = _setting(torch.get_float32_matmul_precision)
    if legacy not in ("highest", "none", None):
        return False
    if device.type == "cuda":
        tf32 = _setting(lambda: torch.backends.cuda.matmul.allow_tf32)
        if tf32 not in ("False", "none", None):
            return False
    return True
