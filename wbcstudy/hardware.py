"""What the CPU can do: its flags, whether it runs bf16 natively, and which bf16 kernels it lacks.

bf16 autocast on a CPU runs each operation with oneDNN's bf16 kernels. A CPU without native
bf16 (AVX2 only, or AVX-512 without AVX512-BF16) still has most of them, emulated, but not all:
oneDNN has no bf16 LSTM for the AVX2 instruction set ("could not create a primitive descriptor
for the LSTM forward propagation primitive"). ``bf16_kernel_available`` asks the running CPU
once per operation (the answer follows ``ONEDNN_MAX_CPU_ISA``, which imitates a lesser CPU), and
the models that use such an operation run it in fp32 inside the bf16 region, recording it in
``fp32_fallbacks`` so that a chapter can say which parts ran in which precision.
"""
from __future__ import annotations

import functools
import platform
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where it is used, so that `wbcstudy check` need not load it
    import torch

#: CPU flags that decide the precision and kernels a run used: AVX2, AVX-512, native bf16 (AVX512-BF16, AMX).
PRECISION_FLAGS: tuple[str, ...] = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")

#: The operations ``bf16_kernel_available`` can probe: each a torch.nn recurrent layer, run on a (1, 3, 4) input.
_PROBES: dict[str, str] = {"lstm": "LSTM", "gru": "GRU"}

_FALLBACKS: set[str] = set()


def cpu_flags(names: tuple[str, ...] = PRECISION_FLAGS, cpuinfo: str | None = None) -> dict[str, bool]:
    """Whether the CPU has each flag in ``names`` (from /proc/cpuinfo, or the given text; all False where unknown)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    return {name: name in flags for name in names}


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or the platform's processor string)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 instructions (AVX512-BF16 or AMX), where bf16 autocast is measured 1.5-3x faster."""
    return any(cpu_flags(("avx512_bf16", "amx_bf16")).values())


@functools.cache
def bf16_kernel_available(operation: str) -> bool:
    """Whether ``operation`` ("lstm", "gru") runs forward and backward under CPU bf16 autocast on this CPU."""
    if operation not in _PROBES:
        raise ValueError(f"unknown operation {operation!r}: probes exist for {', '.join(sorted(_PROBES))}")
    import torch

    with torch.random.fork_rng():  # the probe must not move any run's random numbers
        module = getattr(torch.nn, _PROBES[operation])(input_size=4, hidden_size=2, batch_first=True)
        try:
            with torch.enable_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                out, _ = module(torch.zeros(1, 3, 4))
            torch.autograd.grad(out.float().sum(), list(module.parameters()))
        except RuntimeError:
            return False
    return True


def needs_fp32(operation: str, x: "torch.Tensor") -> bool:
    """Whether ``operation`` on ``x`` must leave bf16 autocast: CPU autocast is on and the CPU has no bf16 kernel for
    it.

    A True answer is recorded (``fp32_fallbacks``): the caller then runs the operation in fp32.
    """
    import torch

    if x.device.type != "cpu" or not torch.is_autocast_enabled("cpu"):
        return False
    if torch.get_autocast_dtype("cpu") != torch.bfloat16 or bf16_kernel_available(operation):
        return False
    _FALLBACKS.add(operation)
    return True


def fp32_fallbacks() -> list[str]:
    """The operations that ran in fp32 inside a bf16 region in this process so far (sorted; empty when none)."""
    return sorted(_FALLBACKS)
