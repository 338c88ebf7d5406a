"""benchmarks/newton_crossover.py, the measurements behind RNN(mode="auto"), on its quick grid."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_run_prints_a_row_per_shape_with_times_and_iterations():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "newton_crossover.py"), "--quick", "--threads",
                          "1"], capture_output=True, text=True, env=env, timeout=300, check=True)  # fmt: skip
    rows = [line.split("|")[1:-1] for line in run.stdout.splitlines() if line.startswith("| 1 |")]
    # One table for the forward, one for forward+backward.
    assert "forward:" in run.stdout and "forward_backward:" in run.stdout
    assert [(r[1].strip(), r[2].strip()) for r in rows] == [("2", "16"), ("2", "64"), ("8", "16"), ("8", "64")] * 2
    for row in rows:
        assert float(row[3]) > 0  # sequential ms
        for cell in row[4:6]:  # "ms (iterations)" for dense and diagonal
            ms, iterations = cell.strip().rstrip(")").split(" (")
            assert float(ms) > 0 and 1 <= int(iterations.split(",")[0]) <= 64
    scan_rows = [line for line in run.stdout.splitlines() if line.startswith("| 256 |")]
    assert len(scan_rows) == 1
