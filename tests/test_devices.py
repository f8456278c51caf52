"""Device names and the float32-matmul precision check (no GPU needed: availability is patched)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from fedgan.simulator.devices import float32_matmul_is_ieee, resolve_device

CPU = torch.device("cpu")
CUDA = torch.device("cuda")  # only named, never used: the check reads torch's switches


def _fake_gpus(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def test_cpu_and_devices_pass_through() -> None:
    assert resolve_device("cpu") == CPU
    assert resolve_device(torch.device("cpu")) == CPU


def test_auto_picks_a_gpu_only_when_there_is_one(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_gpus(monkeypatch, 0)
    assert resolve_device("auto") == CPU
    _fake_gpus(monkeypatch, 2)
    assert resolve_device("auto") == CUDA


def test_cuda_without_a_gpu_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_gpus(monkeypatch, 0)
    for spec in ("cuda", "cuda:0", torch.device("cuda")):
        with pytest.raises(ValueError, match=r"evaluation.device: 'cuda(:0)?' was asked for.*"):
            resolve_device(spec, field="evaluation.device")
    with pytest.raises(ValueError, match="sees no CUDA device.*'auto'"):
        resolve_device("cuda")


def test_cuda_index_must_exist(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_gpus(monkeypatch, 2)
    assert resolve_device("cuda") == CUDA
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ValueError, match=r"'cuda:2' was asked for.*2 CUDA device\(s\)"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("spec", ["gpu", "CUDA", "", "cpu:", "mps", "cuda:x", "cuda:-1"])
def test_unknown_names_are_rejected(spec: str) -> None:
    with pytest.raises(ValueError, match=r"device(:| must be one of 'cpu', 'cuda')"):
        resolve_device(spec)


def test_other_device_types_are_rejected() -> None:
    with pytest.raises(ValueError, match="only cpu and cuda"):
        resolve_device(torch.device("meta"))
    with pytest.raises(ValueError, match="must be one of"):
        resolve_device(3)  # type: ignore[arg-type]


@pytest.fixture
def precision_switches() -> Iterator[None]:
    """Restore torch's precision switches, the legacy one first (it also sets the new ones)."""
    legacy = torch.get_float32_matmul_precision()
    saved = (
        torch.backends.fp32_precision,  # type: ignore[attr-defined]
        torch.backends.cuda.matmul.fp32_precision,
        torch.backends.mkldnn.matmul.fp32_precision,  # type: ignore[attr-defined]
    )
    yield
    torch.set_float32_matmul_precision(legacy)
    torch.backends.fp32_precision = saved[0]  # type: ignore[attr-defined]
    torch.backends.cuda.matmul.fp32_precision = saved[1]
    torch.backends.mkldnn.matmul.fp32_precision = saved[2]  # type: ignore[attr-defined]
    assert torch.get_float32_matmul_precision() == "highest"  # restored for the other tests


def _set(switch: str) -> None:
    exec(switch, {"torch": torch})


# (switch, float32 exact on the CPU, on a GPU), from torch's documented meanings: TF32 and
# bf16 are reduced precision; "high"/"medium" allow them on both backends; cuda.matmul governs
# cuBLAS only and mkldnn.matmul the CPU only; the generic switch governs both.
SWITCHES = [
    ("pass", True, True),
    ("torch.set_float32_matmul_precision('highest')", True, True),
    ("torch.set_float32_matmul_precision('high')", False, False),
    ("torch.set_float32_matmul_precision('medium')", False, False),
    ("torch.backends.cuda.matmul.allow_tf32 = True", False, False),
    ("torch.backends.cuda.matmul.fp32_precision = 'tf32'", True, False),
    ("torch.backends.cuda.matmul.fp32_precision = 'ieee'", True, True),
    ("torch.backends.mkldnn.matmul.fp32_precision = 'bf16'", False, True),
    ("torch.backends.fp32_precision = 'tf32'", False, False),
    ("torch.backends.fp32_precision = 'ieee'", True, True),
]


@pytest.mark.usefixtures("precision_switches")
@pytest.mark.parametrize(("switch", "cpu_exact", "cuda_exact"), SWITCHES)
def test_float32_matmul_precision_switches(switch: str, cpu_exact: bool, cuda_exact: bool) -> None:
    _set(switch)
    assert float32_matmul_is_ieee(CPU) is cpu_exact
    assert float32_matmul_is_ieee(CUDA) is cuda_exact


@pytest.mark.usefixtures("precision_switches")
def test_mixed_precision_apis_do_not_crash_prdc() -> None:
    """torch refuses get_float32_matmul_precision() once the new switches were used; the
    brute back end must still run (in float64 where the CPU's matmul is not exact)."""
    import numpy as np
    from fedgan.simulator.metrics import prdc

    rng = np.random.default_rng(0)
    real, fake = rng.standard_normal((60, 16)), rng.standard_normal((50, 16))
    before = prdc(real, fake, 3, method="brute")
    _set("torch.backends.mkldnn.matmul.fp32_precision = 'bf16'")
    with pytest.raises(RuntimeError):
        torch.get_float32_matmul_precision()
    after = prdc(real, fake, 3, method="brute")
    np.testing.assert_array_equal(after.density_per_fake, before.density_per_fake)
    np.testing.assert_array_equal(after.coverage_per_real, before.coverage_per_real)
    np.testing.assert_array_equal(after.recall_per_real, before.recall_per_real)
    np.testing.assert_array_equal(after.real_radii, before.real_radii)
