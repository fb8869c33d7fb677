"""The benchmark's model store: each method's trained model saved once under ``build/models/<profile>/<key>.pt``.

``load_or_train`` returns the stored model when its file exists and was made for the same key, profile, seed and
parameters; otherwise it trains the model with the method's adapter (timing the call), saves it and returns it. A file
that cannot be read, or one made for other settings, is never served: the reason is printed and the model retrained.

A stored file is ``torch.save({"format", "module", "meta", "history", "probe"})``: the adapter's ``module`` (what its
predict function closes over, pickled whole), the model's plain-data fields (``base.META_FIELDS``: key, chapter,
resolution, crop, training seconds, plateau, the chapter's parameters, note, and the dotted name of the adapter's
predict ``factory``), its training history, and a *probe*: the class probabilities the freshly trained model gave to a
few fixed random images (in fp32). Loading rebuilds ``predict`` with the factory and checks the probe, so a changed
factory or a module that no longer loads the same way is caught instead of silently benchmarking another model. The
files are pickles: load only files this project wrote (``build/`` is git-ignored and local).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from wbcstudy.benchmark.base import (
    BenchmarkModel,
    attach_predictors,
    chapter_parameters_dict,
    model_meta,
    unset_predict,
)

__all__ = ["STORE_FORMAT", "ADAPTER_REVISIONS", "model_path", "save_model", "load_model", "stored_mismatch",
           "load_or_train", "probe_images"]

#: Version of the stored file's layout; a file of another version is retrained.
STORE_FORMAT: int = 2  # 2: a model keeps its chapter's parameters (all of them) as ``parameters``
#: Formats a stored file may have: format 1 kept the parameters its adapter read, as ``recipe`` (read as ``parameters``,
#: and compared over those keys only, as before).
READABLE_FORMATS: tuple[int, ...] = (1, 2)
#: An adapter whose training data or recipe changed beyond its chapter's parameters gets a new revision here: a stored
#: model of an older revision is retrained. hemax 2: trained on its PBC cells only (no Zheng, no BCCD: the benchmark's
#: shift sets).
ADAPTER_REVISIONS: dict[str, int] = {"hemax": 2}
#: Fixed random images the probe predictions are made on, and the largest allowed difference on reload. A reloaded
#: network computes in fp32 with kernels chosen for its weights' memory layout, which moved the probabilities of the
#: trust CNN and ResNeXt-CC by up to 0.0025 (their classes not at all); another model moves them by far more.
PROBE_COUNT, PROBE_SEED, PROBE_TOLERANCE = 2, 1234, 1e-2

TrainFn = Callable[[str, int, str], BenchmarkModel]


def model_path(key: str, profile: str, root: str | Path | None = None) -> Path:
    """``<root>/<profile>/<key>.pt``; ``root`` defaults to the project's ``build/models``."""
    if root is None:
        from wbcstudy.paths import project_root

        root = project_root() / "build" / "models"
    return Path(root) / profile / f"{key}.pt"


def probe_images(size: int, count: int = PROBE_COUNT, seed: int = PROBE_SEED) -> np.ndarray:
    """``count`` fixed uniform-noise uint8 images (N, size, size, 3): inputs whose predictions fingerprint a model."""
    return np.random.default_rng(seed).integers(0, 256, size=(count, size, size, 3), dtype=np.uint8)


def _probe(model: BenchmarkModel) -> np.ndarray:
    """The model's probabilities on the probe images, predicted in fp32 whatever precision it serves at (a model saved
    under bf16 and loaded under fp32, or the reverse, must still pass its check)."""
    from wbcstudy.benchmark.base import resolve_factory
    from wbcstudy.train import precision_forced

    with precision_forced("fp32"):
        predict, _ = resolve_factory(model.factory)(model.module, model_meta(model), "fp32")
        return np.asarray(predict(probe_images(model.image_size)), dtype=np.float64)


def save_model(model: BenchmarkModel, profile: str, seed: int, path: str | Path) -> Path:
    """Write ``model`` (with ``module`` and ``factory`` set) to ``path``, with its probe predictions.

    The probe is made twice; a model whose predictions on the same images differ between two calls (a stochastic
    predict) is stored without one, and its reload is then not checked.
    """
    if model.module is None or not model.factory:
        raise ValueError(f"{model.key}: only a model with module and factory can be stored")
    first, second = _probe(model), _probe(model)
    probe = first if np.allclose(first, second, atol=1e-9, rtol=0) else None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": STORE_FORMAT, "module": model.module,
               "meta": {**model_meta(model), "profile": profile, "seed": int(seed),
                        "revision": ADAPTER_REVISIONS.get(model.key, 1)},
               "history": None if model.history is None else model.history.to_dict(orient="list"), "probe": probe}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def _read(path: Path) -> dict:
    """The stored payload (a format-1 file's ``recipe`` renamed ``parameters``); ValueError when the file cannot be
    read or is not a store file of a readable format."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unreadable file (truncated, not a pickle, missing class) is reported
        raise ValueError(f"cannot be read ({type(err).__name__}: {err})") from err
    if not isinstance(payload, dict) or payload.get("format") not in READABLE_FORMATS or "meta" not in payload:
        raise ValueError(f"is not a model-store file of format {' or '.join(map(str, READABLE_FORMATS))}")
    if payload["format"] == 1:
        payload["meta"]["parameters"] = payload["meta"].pop("recipe", None) or {}
    return payload


def stored_mismatch(meta: dict, key: str, profile: str, seed: int, parameters: dict | None = None) -> str | None:
    """Why a stored model does not serve this request (a sentence), or None when it does.

    The parameters are compared key by key over the stored model's: the adapter stores its chapter's parameters, and
    their current values come from ``parameters`` when given, else from the chapter's typed ``Parameters`` at
    ``profile`` (``chapter_parameters_dict``). A parameter whose value changed, or that the chapter no longer has, is a
    mismatch.
    """
    for name, wanted in (("key", key), ("profile", profile), ("seed", int(seed))):
        if meta.get(name) != wanted:
            return f"it was made for {name} {meta.get(name)!r}, not {wanted!r}"
    revision = ADAPTER_REVISIONS.get(key, 1)
    if meta.get("revision", 1) != revision:
        return f"its adapter changed (revision {meta.get('revision', 1)} -> {revision}: see store.ADAPTER_REVISIONS)"
    stored = meta.get("parameters") or {}
    current = parameters if parameters is not None else chapter_parameters_dict(meta["chapter"], profile)
    changed = sorted(k for k in stored if k not in current or current[k] != stored[k])
    if changed:
        shown = ", ".join(f"{k}: {stored[k]!r} -> {current.get(k, '(gone)')!r}" for k in changed[:5])
        return f"the chapter's parameters changed ({shown}{', ...' if len(changed) > 5 else ''})"
    return None


def load_model(path: str | Path, precision: str = "auto", check_probe: bool = True) -> BenchmarkModel:
    """The stored model at ``path`` with its predict functions rebuilt by its factory (ValueError if unreadable, or
    if its predictions on the probe images differ from those stored)."""
    path = Path(path)
    return _from_payload(_read(path), path, precision, check_probe)


def _from_payload(payload: dict, path: Path, precision: str, check_probe: bool) -> BenchmarkModel:
    """A stored payload as a model, its predict functions rebuilt and its probe checked (see ``load_model``)."""
    meta = dict(payload["meta"])
    history = payload.get("history")
    model = BenchmarkModel(key=meta["key"], name=meta["name"], chapter=meta["chapter"],
                           image_size=int(meta["image_size"]),
                           crop=meta["crop"], predict=unset_predict, train_seconds=float(meta["train_seconds"]),
                           plateau=bool(meta["plateau"]), parameters=dict(meta.get("parameters") or {}),
                           history=None if history is None else pd.DataFrame(history), note=meta.get("note", ""),
                           module=payload["module"], factory=meta["factory"])
    attach_predictors(model, precision)
    probe = payload.get("probe")
    if check_probe and probe is not None:
        now = _probe(model)
        if now.shape != probe.shape or not np.allclose(now, probe, atol=PROBE_TOLERANCE, rtol=0):
            diff = float(np.abs(now - probe).max()) if now.shape == probe.shape else float("inf")
            raise ValueError(f"{path}: the reloaded model predicts the probe images differently from the model that "
                             f"was saved (largest difference {diff:.2g} > {PROBE_TOLERANCE:g}); its factory "
                             f"{meta['factory']!r} or the code it uses has changed")
    return model


def shown_path(path: Path) -> str:
    """``path`` as a log line shows it: relative to the project root where it lies under it (a chapter's output is
    published, and this machine's folders are nobody else's business), else as it is."""
    from wbcstudy.paths import project_root

    try:
        return str(Path(path).resolve().relative_to(project_root().resolve()))
    except ValueError:
        return str(path)


def load_or_train(key: str, profile: str, train_fn: TrainFn, seed: int = 0, precision: str = "auto",
                  root: str | Path | None = None, parameters: dict | None = None, retrain: bool = False,
                  log: Callable[[str], None] | None = print) -> BenchmarkModel:
    """The stored model of method ``key`` at ``profile`` and ``seed``, or a freshly trained (and then stored) one.

    A stored file is used when it reads, was made for the same key, profile and seed, its parameters still match
    the chapter's (``stored_mismatch``; ``parameters`` overrides the chapter's current ones) and its probe predictions
    reproduce. Otherwise ``train_fn(profile, seed, precision)`` runs; its wall-clock seconds become the model's
    ``train_seconds``, and the model is saved when it carries ``module`` and ``factory`` (else a line says it could
    not be stored). ``retrain`` forces training. ``log`` receives one line saying what happened.
    """
    say = log or (lambda _line: None)
    path = model_path(key, profile, root)
    reason = "retrain was requested" if retrain else None
    if not retrain and path.is_file():
        try:
            payload = _read(path)
            reason = stored_mismatch(payload["meta"], key, profile, seed, parameters)
            if reason is None:
                model = _from_payload(payload, path, precision, check_probe=True)
                say(f"{key}: loaded from {shown_path(path)} (trained in {model.train_seconds:.0f} s)")
                return model
        except ValueError as err:
            reason = str(err).replace(str(path), shown_path(path))
    elif not retrain:
        reason = "no stored model"
    say(f"{key}: training ({reason}; {shown_path(path)})")
    start = time.perf_counter()
    model = train_fn(profile, seed, precision)
    model.train_seconds = time.perf_counter() - start
    if model.key != key:
        raise ValueError(f"train function for {key!r} returned a model keyed {model.key!r}")
    if model.module is None or not model.factory:
        say(f"{key}: trained in {model.train_seconds:.0f} s; not stored (the adapter sets no module/factory)")
        return model
    save_model(model, profile, seed, path)
    say(f"{key}: trained in {model.train_seconds:.0f} s, stored at {shown_path(path)}")
    return model
