"""Builds rnnfast._C: the C++ kernels always, the CUDA kernels when RNNFAST_CUDA says so.

RNNFAST_CUDA=auto (default) builds them when PyTorch is a CUDA build and a CUDA toolkit is found, 1 always
(failing if it cannot), 0 never. CUDA_HOME is honoured when set; otherwise the toolkit is found from the real
nvcc, since an `nvcc` on PATH may be a wrapper script whose folder is not the toolkit's.
"""

import glob
import os
import shutil
import subprocess
import sys

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def is_cuda_toolkit(path):
    return bool(path) and os.path.isfile(os.path.join(path, "bin", "nvcc")) and os.path.isfile(
        os.path.join(path, "include", "cuda_runtime.h")
    )


def find_cuda_home():
    if os.environ.get("CUDA_HOME"):
        return os.environ["CUDA_HOME"]
    candidates = ["/usr/local/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
        try:  # a wrapper script still names the real compiler: ask it where it lives
            out = subprocess.run([nvcc, "--dryrun", "--version"], capture_output=True, text=True, timeout=60)
            for line in (out.stdout + out.stderr).splitlines():
                if "TOP=" in line:
                    candidates.append(line.split("TOP=", 1)[1].strip())
        except (OSError, subprocess.SubprocessError):
            pass
    for path in candidates:
        if is_cuda_toolkit(path):
            return os.path.realpath(path)
    return None


def cuda_wanted(torch):
    flag = os.environ.get("RNNFAST_CUDA", "auto").strip().lower()
    if flag not in ("auto", "0", "1"):
        sys.exit(f"RNNFAST_CUDA must be auto, 0 or 1, got {flag!r}")
    if flag == "0":
        return False, None
    cuda_home = find_cuda_home()
    have = torch.version.cuda is not None and cuda_home is not None
    if flag == "1" and not have:
        sys.exit(
            "RNNFAST_CUDA=1 but cannot build CUDA kernels: "
            f"torch {torch.__version__} is {'a CUDA' if torch.version.cuda else 'a CPU-only'} build and "
            f"the CUDA toolkit was {'found at ' + cuda_home if cuda_home else 'not found'} (set CUDA_HOME)."
        )
    return have, cuda_home


def shared_libstdcxx_link_args():
    """Link arguments that make the extension use the process's shared libstdc++ where the C++ compiler that
    setuptools takes from Python's build (sysconfig's CXX; /opt/gcc/bin/g++ on the GPU machines' image) links
    libstdc++ statically. The extension would then carry a second copy of the C++ iostreams whose locale nothing
    initialises, and the first number formatted into an error message (TORCH_CHECK) crashed the process there
    (SIGSEGV) and came out empty here. Nothing where the compiler links libstdc++ as a shared library, as most do.
    Called after torch is imported, so that the libstdc++ it loaded is the one linked."""
    if not sys.platform.startswith("linux"):
        return []
    import shlex
    import sysconfig
    import tempfile

    cxx = shlex.split(os.environ.get("CXX") or sysconfig.get_config_var("CXX") or "c++")
    with tempfile.TemporaryDirectory() as tmp:
        source, library = os.path.join(tmp, "probe.cpp"), os.path.join(tmp, "probe.so")
        with open(source, "w") as f:
            f.write("#include <sstream>\nstd::string probe(long n) { std::ostringstream s; s << n; return s.str(); }\n")
        try:
            subprocess.run(cxx + ["-shared", "-fPIC", source, "-o", library], check=True, capture_output=True,
                           timeout=120)  # fmt: skip
            needed = subprocess.run(["ldd", library], check=True, capture_output=True, text=True, timeout=60).stdout
        except (OSError, subprocess.SubprocessError):
            return []  # the build itself will say what is wrong with the compiler
    if "libstdc++" in needed:
        return []
    with open("/proc/self/maps") as maps:
        loaded = [line.split()[-1] for line in maps if "/libstdc++.so.6" in line]
    print(f"rnnfast: {' '.join(cxx)} links libstdc++ statically; linking {loaded[0] if loaded else 'libstdc++.so.6'}",
          file=sys.stderr)  # fmt: skip
    return [loaded[0]] if loaded else ["-l:libstdc++.so.6"]


def nvidia_wheel_includes():
    """Header folders of the pip nvidia-* wheels beside a CUDA PyTorch (cuBLAS, cuSPARSE, ...), which a bare
    toolkit may lack and PyTorch's CUDA headers include."""
    dirs = []
    for site in sys.path:
        for pattern in ("nvidia/*/include", "nvidia/*/*/include"):
            dirs.extend(sorted(glob.glob(os.path.join(site, pattern))))
    return [d for d in dict.fromkeys(dirs) if os.path.isdir(d)]


# AddressSanitizer + UndefinedBehaviorSanitizer, for the memory-safety CI step (RNNFAST_SANITIZE set); the first flag
# links the runtimes. tests/test_cuda_emulation.py builds the emulated CUDA kernels with this same list, read from here.
SANITIZER_FLAGS = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g"]


def extensions():
    import torch

    with_cuda, cuda_home = cuda_wanted(torch)
    if with_cuda:
        # torch.utils.cpp_extension reads CUDA_HOME when it is first imported.
        os.environ["CUDA_HOME"] = cuda_home
    from torch.utils.cpp_extension import CppExtension, CUDAExtension

    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    # OpenMP so that at::parallel_for in the kernels runs on PyTorch's intra-op threads.
    openmp = ["-fopenmp"] if sys.platform.startswith("linux") else []
    # The C++ standard is the one torch.utils.cpp_extension picks for this torch. -fno-trapping-math lets the
    # compiler vectorise the activation loops (their comparisons and divisions would otherwise count as possible
    # floating-point traps); results are unchanged, only FP exception flags are not promised. -ffp-contract=off
    # keeps a * b + c two roundings in the loops compiled again for AVX2 and AVX-512 (csrc/cpu/simd_target.h),
    # as in the baseline build, which has no FMA: the same bits whichever variant the CPU runs (the multiply-adds
    # that are fused, std::fma, are fused in every variant).
    cxx = ["-O3", "-fno-trapping-math", "-ffp-contract=off"] + openmp
    extra_link = openmp + shared_libstdcxx_link_args()
    if os.environ.get("RNNFAST_SANITIZE"):
        # AddressSanitizer + UndefinedBehaviorSanitizer build for the memory-safety CI step.
        # Undefined behaviour aborts (no recovery), so a finding fails the tests instead of scrolling past.
        cxx += SANITIZER_FLAGS
        extra_link += SANITIZER_FLAGS[:1]
    if not with_cuda:
        return [CppExtension("rnnfast._C", sources, extra_compile_args={"cxx": cxx}, extra_link_args=extra_link)]
    sources += sorted(glob.glob("csrc/cuda/*.cu") + glob.glob("csrc/cuda/*.cpp"))
    nvcc = ["-O3", "-lineinfo", "--expt-relaxed-constexpr"]
    return [
        CUDAExtension(
            "rnnfast._C",
            sources,
            include_dirs=nvidia_wheel_includes(),
            define_macros=[("RNNFAST_WITH_CUDA", None)],
            extra_compile_args={"cxx": cxx, "nvcc": nvcc},
            extra_link_args=extra_link,
        )
    ]


def main():
    ext_modules = extensions()  # first: it sets CUDA_HOME before torch.utils.cpp_extension is imported
    from torch.utils.cpp_extension import BuildExtension

    setup(
        name="rnnfast",
        version="0.1.0",
        description="Fused recurrent-network kernels for PyTorch: drop-in torch.nn.RNN on CPU and CUDA",
        packages=find_packages(include=["rnnfast", "rnnfast.*"]),
        ext_modules=ext_modules,
        cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
        python_requires=">=3.9",
        install_requires=["torch>=2.4"],
        extras_require={"bench": ["matplotlib"]},
        entry_points={"console_scripts": ["rnnfast-bench=rnnfast.bench.cli:main"]},
    )


if __name__ == "__main__":
    main()
