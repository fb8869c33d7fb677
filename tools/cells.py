"""Shared pieces of the chapter sources: the setup and provenance cells, and cell constructors."""
from __future__ import annotations

from nbformat.v4 import new_code_cell, new_markdown_cell

SETUP = '''\
# Setup: on Colab, install the study's package first (it pins torch/torchvision).
import importlib.util, os, sys, time
if importlib.util.find_spec("wbcstudy") is None:
    %pip install -q "wbcstudy @ git+https://github.com/wbcstudy/wbcstudy"
chapter_start = time.perf_counter()
import warnings
warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm.auto imported by accelerate, outside Jupyter widgets
import numpy as np
import pandas as pd
import matplotlib.pyplot as plt
from IPython.display import Markdown, display
from wbcstudy import plots
from wbcstudy.paths import data_root
plots.set_style()
pd.set_option("display.precision", 3)
print("data root:", "WBCSTUDY_DATA" if "WBCSTUDY_DATA" in os.environ else "data/raw/ (set WBCSTUDY_DATA to change it)")'''

PROVENANCE = '''\
from wbcstudy.results import git_commit, provenance
chapter_seconds = time.perf_counter() - chapter_start
print(f"profile: {profile}; wall-clock: {chapter_seconds:.1f} s; commit: {git_commit()}")
pd.Series(provenance(), name="version").to_frame()'''


def code(src: str, *tags: str):
    cell = new_code_cell(src.strip("\n"))
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def md(src: str):
    return new_markdown_cell(src.strip("\n"))
