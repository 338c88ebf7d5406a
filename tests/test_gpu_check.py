"""The GPU check's timing and report code, run on the CPU against torch.nn.RNN, LSTM and GRU with a tiny grid."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The script imports rnnfast; this checkout's, not another one installed in the environment.
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))


def test_gpu_check_writes_a_json_and_a_table_covering_every_shape_and_mode(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--grid", "tiny",
                    "--repeats", "2", "--warmup", "1", "--out", str(tmp_path)], check=True, cwd=ROOT, env=ENV)  # fmt: skip
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    shapes = {(r["batch"], r["hidden"], r["seq_len"], r["mode"]) for r in report["rows"]}
    assert shapes == {(b, h, t, m) for b, h, t in [(2, 8, 16), (4, 16, 8)] for m in ["forward", "forward+backward"]}
    for row in report["rows"]:
        assert set(row["seconds"]) == {"torch.nn", "rnnfast-cpu"}
        assert all(s > 0 for s in row["seconds"].values())
    table, targets = (tmp_path / "gpu_check.md").read_text().split("Issue 3's targets")
    assert sum(line.startswith(("| 2 | 8 | 16 |", "| 4 | 16 | 8 |")) for line in table.splitlines()) == 4
    # The targets: one line a shape, forward+backward.
    assert sum(line.startswith(("| 2 | 8 | 16 |", "| 4 | 16 | 8 |")) for line in targets.splitlines()) == 2


def test_gpu_check_run_cut_short_keeps_the_shapes_it_measured(tmp_path, monkeypatch):
    # gpu_check.sh gives each timing step a time limit: a run stopped during its second shape must leave the first
    # shape's rows in gpu_check.json and gpu_check.md. The stop is simulated by the timer failing on that shape.
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import gpu_check

    calls = []
    real_median_times = gpu_check.median_times

    def median_times_until_the_second_shape(*args):
        calls.append(None)
        if len(calls) > 2:  # two modes a shape
            raise KeyboardInterrupt("time limit")
        return real_median_times(*args)

    monkeypatch.setattr(gpu_check, "median_times", median_times_until_the_second_shape)
    with pytest.raises(KeyboardInterrupt):
        gpu_check.main(["--device", "cpu", "--grid", "tiny", "--repeats", "1", "--warmup", "0", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "gpu_check.json").read_text())["rows"]
    assert [(r["batch"], r["hidden"], r["seq_len"], r["mode"]) for r in rows] == [
        (2, 8, 16, "forward"), (2, 8, 16, "forward+backward")]  # fmt: skip
    table = (tmp_path / "gpu_check.md").read_text().split("Issue 3's targets")[0]
    assert sum(line.startswith("| 2 | 8 | 16 |") for line in table.splitlines()) == 2


def collected_ids(pytest_args):
    result = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
                            + pytest_args, cwd=ROOT, env=ENV, capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return [line for line in result.stdout.splitlines() if "::" in line]


def test_gpu_check_test_groups_run_every_cuda_test_once_each_opt_in_path_alone(monkeypatch):
    # gpu_check.sh runs each group in a pytest process of its own, so that an opt-in path that hangs or faults on
    # its first GPU cannot stop or spoil the other paths' tests: together the groups must hold every CUDA test
    # once, and an opt-in path's group only that path's tests of its cell kind.
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import gpu_check

    groups = gpu_check.check_test_groups()
    ids = {name: collected_ids(args) for name, args in groups.items() if name != "ops"}
    every = collected_ids(gpu_check.CUDA_TEST_FILES + ["-m", "cuda"])
    assert sorted(i for group in ids.values() for i in group) == sorted(every)
    for kind, paths in gpu_check.OPT_IN_PATHS.items():
        for path in paths:
            group = ids[f"{kind}-{path}"]
            assert group and all(i.startswith(f"tests/{gpu_check.PATH_TEST_FILE[kind]}::") and path in i for i in group)
            assert not any(i.startswith(f"tests/{gpu_check.PATH_TEST_FILE[kind]}::") and f"[{path}" in i
                           for i in ids["verified"])  # fmt: skip
    assert groups["ops"] == ["tests/test_ops.py", "tests/test_gated_ops.py"]


def test_gpu_check_lists_its_test_groups_for_the_shell_to_read_back_whole(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import gpu_check

    # The same read as gpu_check.sh's: one group a line, split at "|" into an array (a -k expression keeps its spaces).
    script = 'while IFS="|" read -r -a g; do printf "%s\\n" "${g[@]}"; echo; done <<< "$($0 "$1" --test-groups)"'
    result = subprocess.run(["bash", "-c", script, sys.executable, "benchmarks/gpu_check.py"], cwd=ROOT, env=ENV,
                            capture_output=True, text=True, check=True)  # fmt: skip
    read_back = [block.split("\n") for block in result.stdout.strip("\n").split("\n\n")]
    assert read_back == [[name] + args for name, args in gpu_check.check_test_groups().items()]


def test_gpu_check_times_no_opt_in_path_whose_tests_hung_crashed_or_met_a_cuda_error(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import gpu_check

    def tests_ended(group, rc, log):
        (tmp_path / f"{group}.rc").write_text(f"{rc}\n")
        (tmp_path / f"{group}.log").write_text(log)

    tests_ended("RNN-cluster", 1, "FAILED tests/test_cuda.py::test_x[cluster] - AssertionError\n1 failed, 80 passed")
    tests_ended("RNN-fused", 124, "....")  # stopped by its time limit
    tests_ended("gated-persistent", 1, "torch.AcceleratorError: CUDA error: an illegal memory access was encountered")
    tests_ended("gated-fused", 0, "29 passed")
    assert gpu_check.paths_safe_to_time("RNN", gpu_check.default_paths("RNN"), str(tmp_path)) == ["auto", "cluster"]
    for cell in ["LSTM", "GRU"]:
        assert gpu_check.paths_safe_to_time(cell, gpu_check.default_paths(cell), str(tmp_path)) == ["general", "fused"]
    # A group that never ran (its files missing) is not safe either; the verified paths are always timed.
    empty = tmp_path / "none"
    empty.mkdir()
    every_elman_path = ["general", "persistent", "auto", "cluster", "fused"]
    assert gpu_check.paths_safe_to_time("RNN", every_elman_path, str(empty)) == ["general", "persistent", "auto"]


def test_gpu_check_table_says_where_issue_3s_targets_are_met_and_by_which_path(monkeypatch):
    # Forward+backward only: 3x cuDNN at B <= 16, H <= 256, T >= 256, 1x elsewhere. A path whose tests failed is
    # marked and cannot meet a target, however fast it was.
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import gpu_check

    def row(B, H, T, mode, **ms):
        return dict(batch=B, hidden=H, seq_len=T, mode=mode,
                    seconds={k.replace("_", "-"): v / 1e3 for k, v in ms.items()})  # fmt: skip

    rows = [row(4, 128, 512, "forward", cudnn=1.0, rnnfast_auto=9.0, rnnfast_cluster=9.0, rnnfast_fused=9.0),
            row(4, 128, 512, "forward+backward", cudnn=3.0, rnnfast_auto=2.0, rnnfast_cluster=0.5, rnnfast_fused=0.9),
            row(16, 256, 128, "forward+backward", cudnn=1.0, rnnfast_auto=1.1, rnnfast_fused=0.9),
            row(64, 1024, 128, "forward+backward", cudnn=3.0, rnnfast_auto=2.5, rnnfast_fused=2.0),
            row(1, 64, 256, "forward+backward", cudnn=1.0, rnnfast_auto=0.5, rnnfast_cluster=0.4, rnnfast_fused=0.6)]
    meta = dict(device="cuda", device_name="a GPU", torch="2", dtype="float32", repeats=10, warmup=3, cell="RNN",
                paths=["auto", "cluster", "fused"], paths_with_failed_tests=["cluster"])  # fmt: skip
    table = gpu_check.markdown(rows, meta).split("Issue 3's targets")[1].splitlines()
    assert [line for line in table if line.startswith("| ") and line[2].isdigit()] == [
        "| 4 | 128 | 512 | 3x | 1.50x | rnnfast-cluster* 6.00x | rnnfast-fused |",
        "| 16 | 256 | 128 | 1x | 0.91x | rnnfast-fused 1.11x | rnnfast-fused |",
        "| 64 | 1024 | 128 | 1x | 1.20x | rnnfast-fused 1.50x | rnnfast-auto |",
        "| 1 | 64 | 256 | 3x | 2.00x | rnnfast-cluster* 2.50x | none |",
    ]
    assert table[-1] == "Met at 1 of 4 shapes by rnnfast-auto; at 3 by it or another path whose tests passed."


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_gpu_check_times_the_gated_layers_against_torch_nn(tmp_path, cell):
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--grid", "tiny",
                    "--cell", cell, "--repeats", "2", "--warmup", "1", "--out", str(tmp_path)], check=True,
                   cwd=ROOT, env=ENV)  # fmt: skip
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["meta"]["cell"] == cell and len(report["rows"]) == 4
    for row in report["rows"]:
        assert set(row["seconds"]) == {"torch.nn", "rnnfast-cpu"}
        assert all(s > 0 for s in row["seconds"].values())
    assert (tmp_path / "gpu_check.md").read_text().startswith(f"torch.nn.{cell} against rnnfast.{cell}.")


def test_gpu_profile_reports_wall_and_operator_time_of_every_implementation(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_profile.py"), "--device", "cpu", "--quick",
                    "--repeats", "2", "--warmup", "1", "--out", str(tmp_path)], check=True, cwd=ROOT, env=ENV)  # fmt: skip
    rows = json.loads((tmp_path / "gpu_profile.json").read_text())["rows"]
    impls = ["torch.nn", "rnnfast-cpu"]
    assert {(r["cell"], r["impl"]) for r in rows} == {(c, i) for c in ["RNN", "LSTM"] for i in impls}
    for r in rows:
        assert r["wall_ms"] > 0 and r["host_ms"] > 0 and r["kernel_ms"] > 0 and r["launches"] > 0
        assert 0 < len(r["top"]) <= 4 and all(t["calls"] > 0 and t["us"] >= 0 for t in r["top"])
        assert r["host_top"] == []  # no CUDA runtime on the CPU
    # Each step's costliest operators are its own: rnnfast's layer ops (and their autograd nodes), not in torch.nn's.
    for r in rows:
        assert any("rnnfast" in t["name"] for t in r["top"]) == (r["impl"] == "rnnfast-cpu"), r
    table = (tmp_path / "gpu_profile.md").read_text().splitlines()
    assert sum(line.startswith(("| RNN | 2 | 8 | 16 |", "| LSTM | 2 | 8 | 16 |")) for line in table) == 4
    # The floors, at the first shape: an elementwise op alone, and its forward+backward through autograd, which
    # runs more operators and so takes longer.
    floors = json.loads((tmp_path / "gpu_profile.json").read_text())["meta"]["floors"]
    assert floors["shape"] == [16, 2, 8] and 0 < floors["kernel_ms"] < floors["autograd_ms"]
    assert sum(line.startswith("Floors on this machine (T=16, B=2, H=8") for line in table) == 1


def test_gpu_profile_lists_only_cuda_runtime_and_driver_calls_as_host_calls(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import gpu_profile
    import torch

    class Event:
        def __init__(self, key, us, device_type=torch.autograd.DeviceType.CPU):
            self.key, self.count, self.cpu_time_total, self.device_type = key, 2, us, device_type

    class Profile:
        def key_averages(self):
            return [Event("aten::mm", 50.0), Event("cudaLaunchKernel", 30.0), Event("cuLaunchKernelEx", 40.0),
                    Event("cudaStreamSynchronize", 90.0), Event("cudnn_rnn_kernel", 70.0),
                    Event("aten::cudnn_rnn", 80.0), Event("void elementwise_kernel", 60.0,
                                                          torch.autograd.DeviceType.CUDA)]  # fmt: skip

    calls = gpu_profile.runtime_calls(Profile())
    assert calls == [("cudaStreamSynchronize", 2, 90.0), ("cuLaunchKernelEx", 2, 40.0), ("cudaLaunchKernel", 2, 30.0)]


def test_scan_speed_times_the_scan_against_the_loop_and_they_agree():
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "scan_speed.py"), "--device", "cpu", "--quick"],
                            check=True, cwd=ROOT, env=ENV, capture_output=True, text=True)  # fmt: skip
    rows = [line.split("|")[1:-1] for line in result.stdout.splitlines() if line.startswith("| ") and "ms" not in line]
    rows = [[cell.strip() for cell in row] for row in rows if row[0].strip().isdigit()]
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        (T, B, H, mode) for T, B, H in [("64", "2", "8"), ("128", "1", "4")] for mode in ["forward", "forward+backward"]
    ]
    for row in rows:
        loop_ms, scan_ms, error = float(row[4]), float(row[5]), float(row[7])
        assert loop_ms > 0 and scan_ms > 0
        assert error < 1e-5  # float32, T <= 128 steps of |a| < 1


def test_gpu_check_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "gpu_check.sh")], check=True)


def run_gpu_check_script(tmp_path, budget_s):
    """gpu_check.sh on this machine, with a python whose `setup.py` does nothing (no CUDA to build for): the
    orchestration runs for real, the steps that need a GPU fail fast. Returns (exit status, output folder)."""
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\n[ "$1" = setup.py ] && exit 0\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    out = tmp_path / "out"
    # Test groups get ample limits: on a loaded CI machine the op tests can take more than the GPU's 60 s.
    env = dict(ENV, PYTHON=str(python), TORCH_CUDA_ARCH_LIST="9.0", GPU_CHECK_BUDGET_S=str(budget_s),
               GPU_CHECK_GROUP_LIMIT_S="600", CUDA_VISIBLE_DEVICES="")  # fmt: skip
    result = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(out)], cwd=tmp_path, env=env,
                            capture_output=True, text=True)  # fmt: skip
    return result.returncode, out


def test_gpu_check_script_runs_each_test_group_in_its_own_process_and_records_how_it_ended(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import gpu_check

    status, out = run_gpu_check_script(tmp_path, 540)
    groups = list(gpu_check.check_test_groups())
    summary = (out / "tests" / "summary.txt").read_text().splitlines()
    assert [line.split(":")[0] for line in summary] == groups
    # Without a GPU the CUDA tests skip and the op tests pass on the CPU: every group exits 0, and so does the check.
    for group in groups:
        assert (out / "tests" / f"{group}.rc").read_text().strip() == "0", (out / "tests" / f"{group}.log").read_text()
    assert "skipped" in (out / "tests" / "verified.log").read_text()
    assert status == 0


def test_gpu_check_script_keeps_to_its_budget_and_reports_what_it_did_not_run(tmp_path):
    # A budget spent before the tests: no group runs, each is recorded as stopped (124), and the check fails.
    status, out = run_gpu_check_script(tmp_path, 1)
    assert (out / "tests" / "verified.rc").read_text().strip() == "124"
    assert "budget spent, not run" in (out / "tests" / "verified.log").read_text()
    assert status == 124
