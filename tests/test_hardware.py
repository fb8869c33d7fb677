"""wbcstudy.hardware: CPU flags, and bf16 autocast that never crashes on a CPU lacking a bf16 kernel."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap

import pytest
import torch

from wbcstudy import hardware
from wbcstudy.models.wnet import RowLSTM


def test_cpu_flags_read_the_flags_line_of_the_given_text():
    text = "processor: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n"
    assert hardware.cpu_flags(("avx2", "amx_bf16", "avx512_bf16"), cpuinfo=text) == {
        "avx2": True, "amx_bf16": False, "avx512_bf16": True}
    assert hardware.cpu_flags(("avx2",), cpuinfo="") == {"avx2": False}


def test_unknown_probe_is_an_error():
    with pytest.raises(ValueError, match="unknown operation 'conv9d'"):
        hardware.bf16_kernel_available("conv9d")


def test_needs_fp32_only_inside_cpu_bf16_autocast():
    x = torch.zeros(1, 3, 4)
    assert not hardware.needs_fp32("lstm", x)  # no autocast: nothing to leave
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert hardware.needs_fp32("lstm", x) == (not hardware.bf16_kernel_available("lstm"))


def test_row_lstm_under_bf16_autocast_runs_here_and_matches_fp32():
    torch.manual_seed(0)
    model = RowLSTM(num_classes=5, hidden=8, image_size=16).eval()
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        want = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = model(x)
    assert got.shape == (4, 5)
    assert torch.allclose(got.float(), want, atol=0.05)  # bf16 inputs round to 3 significant digits


_AVX2_SCRIPT = textwrap.dedent("""
    import json
    import torch
    from wbcstudy import hardware
    from wbcstudy.models.wnet import RowLSTM
    torch.manual_seed(0)
    model = RowLSTM(num_classes=5, hidden=8, image_size=16)
    x = torch.randn(4, 3, 16, 16)
    want = model(x).detach()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = model(x)
    got.float().sum().backward()  # training works too: the LSTM's gradients exist
    assert model.lstm.weight_ih_l0.grad is not None
    print(json.dumps({"available": hardware.bf16_kernel_available("lstm"), "fallbacks": hardware.fp32_fallbacks(),
                      "diff": float((got.float() - want).abs().max())}))
""")


@pytest.mark.skipif(platform.machine() not in {"x86_64", "AMD64"}, reason="ONEDNN_MAX_CPU_ISA=AVX2 is an x86 setting")
def test_row_lstm_trains_under_bf16_on_an_avx2_only_cpu():
    """oneDNN limited to AVX2 (a CPU without native bf16) has no bf16 LSTM: the LSTM runs in fp32 and says so."""
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    out = subprocess.run([sys.executable, "-c", _AVX2_SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["available"] is False  # the known case: the probe finds no kernel ...
    assert seen["fallbacks"] == ["lstm"]  # ... so the LSTM left the bf16 region, and that is recorded
    assert seen["diff"] < 0.05


def test_provenance_says_what_ran_in_fp32():
    from wbcstudy.results import provenance

    assert provenance()["fp32_inside_bf16"] in {"none", "lstm (no bf16 kernel on this CPU)"}
