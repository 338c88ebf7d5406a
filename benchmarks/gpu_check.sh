#!/usr/bin/env bash
# The GPU check: on a machine with one NVIDIA GPU, PyTorch, nvcc and no internet, from a clean checkout,
# builds the CUDA kernels in place, runs the CUDA tests, times rnnfast against cuDNN (RNN, LSTM, GRU), and times
# the parallel scan against a per-step loop and the parallel-in-time (Newton) evaluation against the sequential
# kernel, and runs the benchmark suite's quick plan on CUDA. Each step has a time limit, so that one that hangs
# cannot stall the rest.
# Usage: benchmarks/gpu_check.sh OUT_DIR   (writes build.log, tests.log, gpu_check.json, gpu_check.md,
# scan_speed.md and newton_crossover.md there, the LSTM's and GRU's gpu_check.json and .md in OUT_DIR/lstm and
# OUT_DIR/gru, the training step's profile in OUT_DIR/profile, and the suite's report in OUT_DIR/bench)
set -uo pipefail
out=${1:?usage: benchmarks/gpu_check.sh OUT_DIR}
mkdir -p "$out"
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
export RNNFAST_CUDA=1 PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# Only the GPU at hand, so the build stays short.
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$($python -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$out/gpu.txt" 2>&1
start=$(date +%s)
if ! $python setup.py build_ext --inplace > "$out/build.log" 2>&1; then
  tail -40 "$out/build.log"; echo "gpu_check: build failed"; exit 1
fi
echo "gpu_check: built in $(( $(date +%s) - start )) s"
# The CUDA tests (CUDA autocast, the gated layers and the scans included), then the op tests (CPU and CUDA) in
# a process of their own, so that one crash cannot hide the other's results.
timeout 200 $python -m pytest tests/test_cuda.py tests/test_cuda_gated.py tests/test_cuda_scan.py tests/test_mixed_precision.py -m cuda -q -rfE --maxfail=20 -p no:cacheprovider 2>&1 | tee "$out/tests.log" | tail -8
cuda_status=${PIPESTATUS[0]}
timeout 60 $python -m pytest tests/test_ops.py tests/test_gated_ops.py -q -rfE --maxfail=20 -p no:cacheprovider 2>&1 | tee -a "$out/tests.log" | tail -8
ops_status=${PIPESTATUS[0]}
tests_status=$(( cuda_status != 0 ? cuda_status : ops_status ))
echo "gpu_check: tests exit $cuda_status (CUDA) $ops_status (ops) after $(( $(date +%s) - start )) s"
timeout 200 $python benchmarks/gpu_check.py --out "$out" 2>&1 | tail -60
for cell in LSTM GRU; do
  timeout 75 $python benchmarks/gpu_check.py --cell $cell --grid gated --out "$out/${cell,,}" 2>&1 | tail -16
done
# Where a training step's time goes at the shapes where rnnfast lagged cuDNN: wall time against kernel time and
# launches, and the costliest kernels (torch.profiler).
timeout 90 $python benchmarks/gpu_profile.py --out "$out/profile" > "$out/profile.log" 2>&1
echo "gpu_check: profile exit $? (profile/gpu_profile.md)"
timeout 45 $python benchmarks/scan_speed.py --device cuda > "$out/scan_speed.md" 2>&1
echo "gpu_check: scan speed exit $? (scan_speed.md)"
# The measurements that RNN(mode="auto")'s CUDA rule (rnnfast.parallel.PARALLEL_WINS) is to be read from; the
# table is written row by row, so a run cut short by the limit still keeps the rows it measured.
timeout 75 $python benchmarks/newton_crossover.py --device cuda > "$out/newton_crossover.md" 2>&1
echo "gpu_check: Newton crossover exit $? (newton_crossover.md)"
timeout 60 $python -m rnnfast.bench --device cuda --quick --out "$out/bench" > "$out/bench.log" 2>&1
echo "gpu_check: rnnfast.bench --device cuda --quick exit $? (bench/)"
echo "gpu_check: done after $(( $(date +%s) - start )) s"
exit "$tests_status"
