"""What every chapter does first: precision forcing, Colab data set-up and the paper profile on a Colab GPU."""
from __future__ import annotations

import sys
import types

import numpy as np
import pandas as pd
import pytest
import torch

from wbcstudy import notebook
from wbcstudy.train import select_precision


def test_configure_forces_the_precision_for_every_model(monkeypatch, capsys):
    monkeypatch.delenv("WBCSTUDY_PRECISION", raising=False)
    assert notebook.configure("fp32") == "fp32"
    assert select_precision("auto", torch.device("cpu")) == "fp32"
    assert select_precision("bf16", torch.device("cpu")) == "fp32"  # forced from outside wins over a model's request
    assert "precision: fp32 (requested fp32)" in capsys.readouterr().out
    monkeypatch.setenv("WBCSTUDY_PRECISION", "bf16")
    assert notebook.configure("auto") == "bf16"  # auto keeps what the environment forces
    with pytest.raises(ValueError, match="precision='fp16'"):
        notebook.configure("fp16")
    monkeypatch.setenv("WBCSTUDY_PRECISION", "fp8")
    with pytest.raises(ValueError, match="WBCSTUDY_PRECISION='fp8'"):
        notebook.configure("auto")


def test_setup_on_colab_sets_the_data_root_and_fetches(monkeypatch, capsys):
    from wbcstudy.data import sources

    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.delenv("WBCSTUDY_DATA", raising=False)
    fetched = []

    def fake_fetch(key):
        fetched.append(key)
        if key == "pbc":
            raise RuntimeError("no sha256 recorded for pbc\nmore detail")
        return f"/content/wbcstudy-data/{key}"

    monkeypatch.setattr(sources, "fetch", fake_fetch)
    notebook.setup()
    import os

    assert os.environ["WBCSTUDY_DATA"] == notebook.COLAB_DATA
    assert fetched == list(sources.SOURCES)
    out = capsys.readouterr().out
    assert "pbc: not fetched (no sha256 recorded for pbc)" in out and "more detail" not in out


def test_paper_profile_only_on_an_interactive_colab_gpu_run(monkeypatch):
    from wbcstudy.run import load_profile

    ns = {"profile": "cpu"}
    assert notebook.apply_paper_profile_on_colab_gpu("wnet", ns) == {} and ns == {"profile": "cpu"}  # not on Colab
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    ns = {"profile": "smoke"}
    assert notebook.apply_paper_profile_on_colab_gpu("wnet", ns) == {}  # papermill gave it a profile
    ns = {"profile": "cpu"}
    changed = notebook.apply_paper_profile_on_colab_gpu("wnet", ns)
    assert ns["profile"] == "paper" and changed == {**load_profile("wnet", "paper"), "profile": "paper"}


def test_glue_writes_the_record_myst_nb_reads_and_rounds_floats(capsys):
    from IPython.core.interactiveshell import InteractiveShell
    from myst_nb.core.variables import format_plain_text
    from myst_nb.ext.glue import extract_glue_data_cell
    from nbformat.v4 import new_code_cell, new_output

    shell = InteractiveShell.instance()
    shown = []
    shell.display_pub.publish = lambda data, metadata=None, **kw: shown.append((data, metadata))
    try:
        notebook.glue(gain=np.float32(0.0123456789), cells=np.int64(412), model="ResNet-18")
    finally:
        InteractiveShell.clear_instance()
    cell = new_code_cell("", outputs=[new_output("display_data", data=d, metadata=m) for d, m in shown])
    glued = dict(extract_glue_data_cell(cell))
    assert set(glued) == {"gain", "cells", "model"} and cell.outputs == []  # nothing shown in the notebook
    assert format_plain_text(glued["gain"]["data"]["text/plain"], ".3f") == "0.012"
    assert glued["gain"]["data"]["text/plain"] == "0.012346"  # 5 significant digits
    assert format_plain_text(glued["cells"]["data"]["text/plain"], "") == "412"
    assert format_plain_text(glued["model"]["data"]["text/plain"], "") == "ResNet-18"  # no quotes
    with pytest.raises(TypeError, match="glue table"):
        notebook.glue(table=pd.DataFrame())
