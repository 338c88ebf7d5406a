"""The CPU gated kernels' baseline (SSE2), AVX2 and AVX-512 variants of the pointwise passes give the same bits, so
the gates do not depend on which CPU computed them. RNNFAST_CPU_SIMD=baseline or avx2 forces that variant; each run
is its own process because the choice is made once per process. The per-step products run in BLAS here
(RNNFAST_CPU_STEP=blas): the register-tiled products fuse multiply-adds where the CPU has FMA, so their last bits
depend on the CPU, as a BLAS's do (tests/test_cpu_step_paths.py checks them against torch.nn)."""

import os
import subprocess
import sys

import pytest
import torch

import rnnfast

RUN = r"""
import sys, torch, rnnfast
torch.manual_seed(0)
results = []
for name, extra in [("LSTM", {}), ("LSTM", {"proj_size": 5}), ("GRU", {})]:
    module = getattr(rnnfast, name)(7, 37, num_layers=2, bidirectional=True, **extra)
    x = torch.randn(9, 5, 7, requires_grad=True)
    output, _ = module(x)
    grads = torch.autograd.grad((output * torch.randn_like(output)).sum(), [x, *module.parameters()])
    results += [output.detach(), *grads]
torch.save(results, sys.argv[1])
"""


def run(path, simd):
    root = os.path.dirname(os.path.dirname(os.path.abspath(rnnfast.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    env.pop("RNNFAST_CPU_SIMD", None)
    env["RNNFAST_CPU_STEP"] = "blas"
    if simd is not None:
        env["RNNFAST_CPU_SIMD"] = simd
    subprocess.run([sys.executable, "-c", RUN, str(path)], env=env, check=True, timeout=300)
    return torch.load(path)


@pytest.mark.parametrize("variant", ["avx2", None], ids=["avx2", "default"])
def test_baseline_and_wider_variants_give_identical_results(tmp_path, variant):
    # None: the variant the CPU picks, AVX-512 where it has it.
    baseline = run(tmp_path / "baseline.pt", "baseline")
    wider = run(tmp_path / "wider.pt", variant)
    assert len(baseline) == len(wider) > 0
    for b, w in zip(baseline, wider, strict=True):
        assert torch.equal(b, w)
    capability = torch.backends.cpu.get_cpu_capability()
    if capability == "DEFAULT" or (variant is None and not capability.startswith("AVX512")):
        pytest.skip(f"this CPU ({capability}) ran the baseline variant in both runs")
