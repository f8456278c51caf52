#!/usr/bin/env bash
# GPU check, one shot, under 5 minutes: install fedgan beside the machine's own PyTorch (never
# replacing it), then run on cuda
#   1. the vectorized engine at 10, 100 and 1,000 clients (seconds per round, 20 local steps),
#   2. vectorized on cuda vs vectorized on this machine's CPU at 100 clients,
#   3. PRDC at 100k × 100k × 64-D,
#   4. the cross-device round: 50 of 1,000 clients a round (target ≤ 0.5 s; 2.85 s for 1,000
#      clients × 20 steps on an H100 before the hand-batched step),
#   5. DCGAN conv clients (28×28): a round vectorized vs sequential at 10 and 50 clients,
# and print the numbers (also kept in $OUT/gpu_check.log when OUT is set).
#
#   bash benchmarks/gpu_check.sh                 # a machine that reaches a package index
#   WHEELS=.whl bash benchmarks/gpu_check.sh     # offline: wheels of what the machine lacks
#
# Offline, WHEELS holds wheels (matching the machine's Python) of the project's dependencies
# that the machine does not have; they go, without dependency resolution, into their own folder
# first on PYTHONPATH, so nothing installed there — torch above all — is replaced.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
LOG=${OUT:-/tmp}/gpu_check.log
export PYTHONUNBUFFERED=1 FEDGAN_CACHE=${FEDGAN_CACHE:-/tmp/fedgan-cache}
start=$(date +%s)
exec > >(tee "$LOG") 2>&1

"$PY" -c "import torch, sys; assert torch.cuda.is_available(), 'torch sees no CUDA device';
print('python', sys.version.split()[0], '| torch', torch.__version__, '|', torch.cuda.get_device_name(0))"
torch_before=$("$PY" -c "import torch; print(torch.__version__, torch.__file__)")

if [ -n "${WHEELS:-}" ]; then
  SITE=${SITE:-/tmp/fedgan-site}
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "$WHEELS"/*.whl
  export PYTHONPATH="$SITE:$PWD"
else
  # torch already satisfies the project's pin (torch>=2.4,<2.14), so pip keeps it.
  "$PY" -m pip install -q -e .
fi
torch_after=$("$PY" -c "import torch; print(torch.__version__, torch.__file__)")
if [ "$torch_before" != "$torch_after" ]; then
  echo "torch changed: $torch_before -> $torch_after"; exit 1
fi
"$PY" -c "import flwr, fairlearn, fedgan.simulator.engines.vectorized, fedgan.server.app; print('fedgan imports: ok, flwr', flwr.__version__)"
echo "install: $(( $(date +%s) - start )) s"

echo; echo "=== 1. vectorized engine on cuda: 10, 100, 1000 clients ==="
"$PY" benchmarks/engine_scale.py --device cuda --only scaling --clients 10,100,1000 --rounds 3

echo; echo "=== 2. 100 clients: vectorized on cuda vs on the CPU vs sequential (one process) ==="
"$PY" benchmarks/engine_scale.py --device cuda --only compare --widths 64,256 --rounds 2 \
  --engines vectorized,vectorized-cpu,inprocess --threads 8

echo; echo "=== 3. PRDC, 100k x 100k x 64-D on cuda ==="
"$PY" benchmarks/prdc.py --device cuda --n 100000

echo; echo "=== 4. cross-device: 1,000 clients, 50 a round, vectorized on cuda ==="
"$PY" benchmarks/cross_device.py --device cuda --no-ray --rounds 5 --memory-clients 10000

echo; echo "=== 5. conv clients: dcgan [64, 128], 28x28, vectorized vs sequential on cuda ==="
"$PY" benchmarks/conv_clients.py --device cuda --clients 10,50 --repeats 3

echo; echo "gpu check: $(( $(date +%s) - start )) s in all"
