#!/usr/bin/env bash
# One-shot check of PRDC on a CUDA machine (~1-2 min): the device tests, then the benchmarks.
# Run from the repository root with the GPU machine's python3 (torch with CUDA, numpy, scipy,
# pandas, pytest); fairlearn must be importable too (e.g. PYTHONPATH=<a copy of it>).
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
status=0
nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv,noheader || true
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
  torch.cuda.is_available() and torch.cuda.get_device_name())" || exit 1
# 1. Exactness: GPU results equal the CPU path's, TF32 fallback, sqdist rounding, GEMM bound.
python3 -m pytest --noconftest -q -p no:cacheprovider tests/metrics/test_prdc_device.py || status=1
# 2. 100k × 100k, 64-D on the GPU; GPU vs CPU in one process at 20k (and identical results).
python3 benchmarks/prdc.py --device cuda --n 100000 || status=1
# 3. Low dimension: brute force on the GPU against the CPU's k-d tree, both at 100k × 100k.
python3 benchmarks/prdc.py --device cuda --n 100000 --d 2 --cpu-n 100000 --repeats 2 || status=1
exit $status
