"""The summary chapter's benchmark: every method's model on the same PBC-5 test cells.

``METHODS`` maps each method's key to its adapter ``benchmark_<key>(profile, seed, precision) -> BenchmarkModel``, in
the order the summary shows them. ``wbcstudy.benchmark.store.load_or_train(key, profile, METHODS[key])`` returns a
stored model or trains one; ``wbcstudy.benchmark.measure.run_benchmark(model)`` measures it. The adapters import their
chapters' code only when called.
"""
from __future__ import annotations

import importlib
from typing import Callable

__all__ = ["METHODS", "METHOD_MODULES", "method"]

#: key → (module under ``wbcstudy.benchmark``, adapter function), in the summary's order.
METHOD_MODULES: dict[str, tuple[str, str]] = {
    "wnet": ("classifiers", "benchmark_wnet"),
    "trust_cnn": ("classifiers", "benchmark_trust_cnn"),
    "resnext_cc": ("paper_models", "benchmark_resnext_cc"),
    "hemax": ("paper_models", "benchmark_hemax"),
    "cytodiffusion": ("paper_models", "benchmark_cytodiffusion"),
    "resnet18": ("classifiers", "benchmark_resnet18"),
    "efficientnet_lite0": ("classifiers", "benchmark_efficientnet_lite0"),
}


def method(key: str) -> Callable:
    """The adapter of method ``key`` (its module imported now); a clear error when it is unknown or not written yet."""
    if key not in METHOD_MODULES:
        raise ValueError(f"unknown benchmark method {key!r}; choose one of {', '.join(METHOD_MODULES)}")
    module, attr = METHOD_MODULES[key]
    try:
        return getattr(importlib.import_module(f"{__name__}.{module}"), attr)
    except (ImportError, AttributeError) as err:
        raise ImportError(f"the adapter of {key!r} ({__name__}.{module}.{attr}) is not available: {err}") from err


def _lazy(key: str) -> Callable:
    """A stand-in that imports the adapter of ``key`` on first call (so that listing METHODS imports no chapter)."""

    def train(profile: str, seed: int = 0, precision: str = "auto"):
        return method(key)(profile, seed, precision)

    train.__name__ = train.__qualname__ = METHOD_MODULES[key][1]
    train.__doc__ = f"Train the benchmark model of {key!r} (``{__name__}.{'.'.join(METHOD_MODULES[key])}``)."
    return train


#: key → adapter ``train(profile, seed=0, precision="auto") -> BenchmarkModel``, in the summary's order.
METHODS: dict[str, Callable] = {key: _lazy(key) for key in METHOD_MODULES}
