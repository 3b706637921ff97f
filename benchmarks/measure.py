"""What every benchmark prints about where it ran, and how it times: the device named, medians, peak RSS.

Machines differ between sessions (core count, AVX-512 or not, the accelerator), so every table starts with
`device_name()`, and a comparison is only ever made with a figure measured in the same run.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import subprocess
import time
from collections.abc import Callable


def _cpuinfo() -> tuple[str, bool]:
    """(model name, whether the CPU has AVX-512) from /proc/cpuinfo, else `lscpu`; ("", False) if neither says."""
    name, flags = "", ""
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and not name:
                    name = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = value
    except OSError:
        pass
    if not name:
        try:
            listing = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=False).stdout
        except (OSError, subprocess.SubprocessError):
            listing = ""
        for line in listing.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "Model name":
                name = value.strip()
            elif key.strip() == "Flags":
                flags = value
    return name, "avx512f" in flags.split()


def cpu_model() -> str:
    """The CPU's model name, its core count and AVX-512 if present, e.g. `AMD EPYC (2 cores, AVX-512)`."""
    name, avx512 = _cpuinfo()
    name = name or platform.processor() or platform.machine() or "unknown CPU"
    return f"{name} ({os.cpu_count()} cores{', AVX-512' if avx512 else ''})"


def device_name() -> str:
    """The devices JAX computes on, named: the CPU model, or the accelerators' kind and count with the host CPU."""
    import jax  # noqa: PLC0415 (the anchor's interpreter has no JAX; this module's CPU helpers need none)

    if jax.default_backend() == "cpu":
        return f"CPU: {cpu_model()}, {jax.device_count()} JAX device(s); jax {jax.__version__}"
    return (f"{jax.device_count()} x {jax.devices()[0].device_kind} ({jax.default_backend()}); host CPU: "
            f"{cpu_model()}; jax {jax.__version__}")


def median_seconds(function: Callable[[int], object], repetitions: int) -> float:
    """The median wall time of `function(repetition)` over `repetitions` calls (it must block on its result)."""
    times = []
    for repetition in range(repetitions):
        start = time.perf_counter()
        function(repetition)
        times.append(time.perf_counter() - start)
    return float(statistics.median(times))


def peak_rss_mib() -> float:
    """This process's peak resident memory, MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
