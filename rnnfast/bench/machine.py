"""What a measurement ran on, recorded beside it so that numbers from different machines are not mixed up."""

import os
import platform
import resource
import sys
import time

import torch


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list:
    """The vector extensions that decide how fast the products can go."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    return sorted(f for f in flags if f.startswith(("avx", "fma", "amx")))
    except OSError:
        pass
    return []


def load_average() -> float:
    """The 1-minute load average: how many processes were wanting a CPU, this run among them once it runs."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def _busy_cpu_seconds():
    """CPU time the whole machine has spent busy since boot, from /proc/stat (Linux), or None elsewhere."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds():
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class OtherLoad:
    """How much CPU other processes took while this run was measuring: the machine's busy time less this
    process's own. On a shared machine it says whether the timings were made alone."""

    def __init__(self):
        self.start_busy, self.start_own, self.start_wall = _busy_cpu_seconds(), _own_cpu_seconds(), time.time()

    @classmethod
    def sample(cls, seconds: float) -> float:
        """CPUs kept busy by other processes over the next `seconds` (0 where it cannot be told)."""
        probe = cls()
        time.sleep(seconds)
        return probe.report().get("other_processes_cpus_busy", 0.0)

    def report(self) -> dict:
        end_busy, end_own, wall = _busy_cpu_seconds(), _own_cpu_seconds(), time.time() - self.start_wall
        if self.start_busy is None or end_busy is None:
            return {}
        other = max(0.0, (end_busy - self.start_busy) - (end_own - self.start_own))
        return {"other_processes_cpu_s": other, "run_wall_s": wall,
                "other_processes_cpus_busy": other / wall if wall > 0 else 0.0}  # fmt: skip


def describe(device: torch.device) -> dict:
    info = {
        "cpu_model": cpu_model(),
        "cpu_flags": cpu_flags(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkl": torch.backends.mkl.is_available(),
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "command": " ".join(getattr(sys, "orig_argv", sys.argv)),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda_version"] = torch.version.cuda
    return info
