"""Runs every example's smoke mode the way a user would, in a fresh interpreter, and checks what it prints.

Each example runs with one thread: on a machine shared with other work, PyTorch's OpenMP threads wait for
busy cores, and a 2-thread run of these small models was seen to take 10 to 70 times longer than a 1-thread one.
"""

import os
import re
import subprocess
import sys

import pytest

import rnnfast
from example_loading import EXAMPLES, load_example

# The subprocess must import the rnnfast this test imported (an in-place build or an installed one).
RNNFAST_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(rnnfast.__file__)))
RESULT_LINE = re.compile(r"^result: (?P<metric>.+) = (?P<value>\S+), target (?P<relation>>=|<=) (?P<target>\S+) -> ",
                         re.MULTILINE)  # fmt: skip


def run_example(name, *args):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (RNNFAST_ROOT, env.get("PYTHONPATH")) if p)
    done = subprocess.run([sys.executable, os.path.join(EXAMPLES, name), *args], capture_output=True, text=True,
                          env=env, timeout=120)  # fmt: skip
    assert done.returncode == 0, f"{name} {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


EXAMPLE_NAMES = sorted(f for f in os.listdir(EXAMPLES) if f.endswith(".py") and f != "example_support.py")


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_example_has_help(name, capsys):
    # In this process: a fresh interpreter per --help would spend seconds importing torch to print a page.
    module = load_example(name)
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    page = capsys.readouterr().out
    assert page.startswith("usage: ") and module.__doc__.splitlines()[0] in page


def test_hand_worked_example_prints_the_article_numbers():
    out = run_example("hand_worked_example.py")
    # The article's hidden states, each printed by hand, by rnnfast and by torch.nn.RNN.
    for t, h in enumerate(["0.4621", "0.8981", "0.9836"], start=1):
        assert re.search(rf"^ {t} +{t} +{h} +{h} +{h} +h_{t}$", out, re.MULTILINE), out
    assert "by hand 0.984, rnnfast 0.984, torch.nn.RNN 0.984" in out


def test_predict_next_number_agrees_with_torch_nn():
    module = load_example("predict_next_number.py")
    # 100 epochs: the trajectories still differ where a gradient is wrong (after 1000 both sit on 5).
    out = run_example("predict_next_number.py", "--epochs", "100", "--threads", "1")
    untrained, trained = {}, {}
    for name in ("torch.nn.RNN", "rnnfast.RNN"):
        line = re.search(rf"^ *{re.escape(name)} +(\S+) +(\S+) +(\S+) +(\S+)$", out, re.MULTILINE)
        assert line, out
        untrained[name], trained[name], ms_per_epoch, loss = map(float, line.groups())
        assert ms_per_epoch > 0 and loss < 1e-2, out
    for predictions in (untrained, trained):
        assert abs(predictions["rnnfast.RNN"] - predictions["torch.nn.RNN"]) <= module.PREDICTION_TOLERANCE, out
    # Both learned the task: the number after 2, 3, 4 is 5.
    assert abs(trained["rnnfast.RNN"] - 5) < 0.1, out


# Each shape example, the module constant holding its target, and whether higher values are better.
SHAPE_EXAMPLES = [
    ("one_to_many.py", "TARGET_MSE", False),
    ("many_to_one.py", "TARGET_ACCURACY", True),
    ("many_to_many.py", "TARGET_ACCURACY", True),
    ("encoder_decoder.py", "TARGET_SEQUENCE_ACCURACY", True),
]


def test_every_example_is_tested():
    tested = {"hand_worked_example.py", "predict_next_number.py"} | {name for name, _, _ in SHAPE_EXAMPLES}
    assert tested == set(EXAMPLE_NAMES)


@pytest.mark.parametrize("name, target_name, higher_is_better", SHAPE_EXAMPLES)
def test_shape_example_reaches_its_target_in_smoke_mode(name, target_name, higher_is_better):
    target = getattr(load_example(name), target_name)
    out = run_example(name, "--quick", "--threads", "1")
    result = RESULT_LINE.search(out)
    assert result, out
    assert float(result["target"]) == target and result["relation"] == (">=" if higher_is_better else "<=")
    value = float(result["value"])
    assert (value >= target if higher_is_better else value <= target), out
