#!/usr/bin/env bash
# The GPU check: on a machine with one NVIDIA GPU, PyTorch, nvcc and no internet, from a clean checkout,
# builds the CUDA kernels in place, runs the CUDA tests, times rnnfast against cuDNN (RNN, LSTM, GRU), and times
# the parallel scan against a per-step loop and the parallel-in-time (Newton) evaluation against the sequential
# kernel, and runs the benchmark suite's quick plan on CUDA.
# Usage: benchmarks/gpu_check.sh OUT_DIR   (writes build.log, the tests' output and exit status a group in
# OUT_DIR/tests (summary.txt first), gpu_check.json, gpu_check.md, scan_speed.md and newton_crossover.md, the
# LSTM's and GRU's gpu_check.json and .md in OUT_DIR/lstm and OUT_DIR/gru, the training step's profile in
# OUT_DIR/profile, and the suite's report in OUT_DIR/bench)
#
# A GPU is lent for one call of at most 600 s, so the whole check keeps to GPU_CHECK_BUDGET_S (540 s unless set):
# each step has a time limit of its own (an opt-in path's test group GPU_CHECK_GROUP_LIMIT_S, 60 s unless set, the
# verified paths' 2.5 times that), cut to what is left of the budget, and the steps come in the order of what their
# results are worth. A step that hangs costs its limit, not the rest of the check.
set -uo pipefail
out=${1:?usage: benchmarks/gpu_check.sh OUT_DIR}
mkdir -p "$out/tests"
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
export RNNFAST_CUDA=1 PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# Only the GPU at hand, so the build stays short.
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$($python -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$out/gpu.txt" 2>&1
start=$(date +%s)
deadline=$(( start + ${GPU_CHECK_BUDGET_S:-540} ))
elapsed() { echo $(( $(date +%s) - start )); }

# step LIMIT COMMAND...: COMMAND under LIMIT seconds or what is left of the budget if less (timeout's status 124
# when stopped, SIGKILL 10 s after SIGTERM if that is not enough); not run at all once the budget is spent.
step() {
  local left=$(( deadline - $(date +%s) )) seconds=$1
  shift
  (( left < seconds )) && seconds=$left
  if (( seconds <= 0 )); then
    echo "gpu_check: budget spent, not run: $*" >&2
    return 124
  fi
  timeout -k 10 "$seconds" "$@"
}

if ! step 300 $python setup.py build_ext --inplace > "$out/build.log" 2>&1; then
  tail -40 "$out/build.log"; echo "gpu_check: build failed or stopped after $(elapsed) s"; exit 1
fi
echo "gpu_check: built in $(elapsed) s"

# The tests, a pytest process a group (gpu_check.py --test-groups: the verified paths' CUDA tests, then each opt-in
# path's, then the op tests), each group's output in tests/GROUP.log and its exit status in tests/GROUP.rc, which
# gpu_check.py reads to leave out of the timings an opt-in path whose tests hung, crashed or met a CUDA error.
# faulthandler_timeout prints every thread's stack when one test runs past 20 s, so a hang names its test.
if ! groups=$($python benchmarks/gpu_check.py --test-groups); then
  echo "gpu_check: could not list the test groups"; exit 1
fi
tests_status=0
while IFS='|' read -r -a group; do
  name=${group[0]}
  # The verified group holds about half the tests (30 s on an H200 with process start), an opt-in path's a sixth.
  limit=${GPU_CHECK_GROUP_LIMIT_S:-60}
  [[ $name == verified ]] && limit=$(( limit * 5 / 2 ))
  step "$limit" $python -m pytest "${group[@]:1}" -q -rfE --maxfail=20 -p no:cacheprovider \
    -o faulthandler_timeout=20 < /dev/null > "$out/tests/$name.log" 2>&1
  rc=$?
  echo "$rc" > "$out/tests/$name.rc"
  (( tests_status == 0 )) && tests_status=$rc
  echo "$name: exit $rc at $(elapsed) s: $(tail -1 "$out/tests/$name.log")" | tee -a "$out/tests/summary.txt"
done <<< "$groups"

step 200 $python benchmarks/gpu_check.py --out "$out" --tests-dir "$out/tests" 2>&1 | tail -60
for cell in LSTM GRU; do
  step 75 $python benchmarks/gpu_check.py --cell $cell --grid gated --out "$out/${cell,,}" --tests-dir "$out/tests" \
    2>&1 | tail -16
done
# Where a training step's time goes at the shapes where rnnfast lagged cuDNN: wall time against kernel time,
# launches and host time, the costliest kernels and CUDA runtime calls (torch.profiler), and the machine's floors
# (one kernel; one op's forward+backward through autograd).
step 90 $python benchmarks/gpu_profile.py --out "$out/profile" --tests-dir "$out/tests" > "$out/profile.log" 2>&1
echo "gpu_check: profile exit $? (profile/gpu_profile.md)"
step 45 $python benchmarks/scan_speed.py --device cuda > "$out/scan_speed.md" 2>&1
echo "gpu_check: scan speed exit $? (scan_speed.md)"
# The measurements that RNN(mode="auto")'s CUDA rule (rnnfast.parallel.PARALLEL_WINS) is to be read from; the
# table is written row by row, so a run cut short by the limit still keeps the rows it measured.
step 75 $python benchmarks/newton_crossover.py --device cuda > "$out/newton_crossover.md" 2>&1
echo "gpu_check: Newton crossover exit $? (newton_crossover.md)"
step 60 $python -m rnnfast.bench --device cuda --quick --out "$out/bench" > "$out/bench.log" 2>&1
echo "gpu_check: rnnfast.bench --device cuda --quick exit $? (bench/)"
echo "gpu_check: done after $(elapsed) s"
exit "$tests_status"
