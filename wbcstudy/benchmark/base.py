"""What every benchmarked method hands the summary chapter: one trained model behind one prediction function."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd

from wbcstudy.data.cache import load_split_arrays

#: The summary's benchmark classes: PBC's five WBC classes (``data/manifests/pbc5.csv``), in label order.
WBC5: list[str] = ["basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil"]
#: Classes no benchmarked model is trained on, scored as anomalies (PBC-8 test cells outside WBC5).
ANOMALY_CLASSES: list[str] = ["erythroblast", "ig"]

#: images (N, H, W, 3) uint8 at the method's own resolution -> class probabilities (N, len(WBC5)), rows summing to 1.
Predict = Callable[[np.ndarray], np.ndarray]


@dataclass
class BenchmarkModel:
    """One method's trained model as the summary sees it.

    ``predict`` takes uint8 NHWC images at ``image_size`` px (the resolution the method was trained at) and returns
    class probabilities over :data:`WBC5`; ``anomaly_score`` (higher = more anomalous) defaults to one minus the
    largest probability. ``train_seconds`` is the wall-clock of the training that made the model (also when it was
    loaded from the store); ``parameters`` its chapter's parameters it was trained with (all of them, as a dict);
    ``plateau`` whether its validation curve reached its plateau (``train.reached_plateau``).

    For the model store (``wbcstudy.benchmark.store``), an adapter also sets ``module`` — what ``predict`` closes over:
    an ``nn.Module``, or any object ``torch.save`` can pickle (a dict of modules and tensors) — and ``factory``, the
    dotted name ``"package.module:function"`` of a module-level function ``factory(module, meta, precision)`` that
    returns ``(predict, anomaly_score_or_None)``; ``meta`` is :func:`model_meta` of the model. The adapter should build
    its own ``predict`` with that same factory, so that a model loaded from the store predicts exactly as the freshly
    trained one did. A model without ``module`` and ``factory`` is trained anew on every call (nothing is stored).
    """

    key: str
    name: str
    chapter: str
    image_size: int
    crop: str
    predict: Predict
    train_seconds: float
    plateau: bool
    parameters: dict = field(default_factory=dict)
    history: pd.DataFrame | None = None
    note: str = ""
    anomaly_score: Callable[[np.ndarray], np.ndarray] | None = None
    module: Any = None
    factory: str = ""

    def score_anomaly(self, images: np.ndarray) -> np.ndarray:
        if self.anomaly_score is not None:
            return np.asarray(self.anomaly_score(images), dtype=np.float64)
        return 1.0 - np.asarray(self.predict(images), dtype=np.float64).max(axis=1)


def unset_predict(images: np.ndarray) -> np.ndarray:
    """The ``predict`` a model holds until :func:`attach_predictors` builds the real one from its factory."""
    raise RuntimeError("predict is not attached yet")


def pbc5_split(split: str, size: int, crop: str = "none") -> tuple[np.ndarray, np.ndarray]:
    """Images and labels (indices into :data:`WBC5`) of one split of ``pbc5`` at ``size`` px."""
    images, labels, _ = load_split_arrays("pbc5", split, size, classes=WBC5, crop=crop)
    return images, labels


def chapter_parameters_dict(chapter: str, profile: str) -> dict:
    """A chapter's typed ``Parameters`` at ``profile`` (``run.chapter_parameters``: the profile file checked against the
    dataclass in ``wbcstudy.experiments.<chapter>``) as the plain dict a stored model keeps: the store reuses a model
    only while every one of its chapter's parameters is unchanged. No notebook is read."""
    from dataclasses import asdict

    from wbcstudy.run import chapter_parameters

    return asdict(chapter_parameters(chapter, profile))


def check_images(key: str, size: int, images: np.ndarray) -> np.ndarray:
    """``images`` as an array, after checking they are uint8 (N, size, size, 3): what every predict function takes."""
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[1:] != (size, size, 3) or x.dtype != np.uint8:
        raise ValueError(f"{key} predicts uint8 images of shape (N, {size}, {size}, 3), got {x.shape} {x.dtype}")
    return x


#: The fields of a :class:`BenchmarkModel` that the store keeps as data (everything but the callables and the module).
META_FIELDS: tuple[str, ...] = ("key", "name", "chapter", "image_size", "crop", "train_seconds", "plateau",
                                "parameters", "note", "factory")


def model_meta(model: BenchmarkModel) -> dict:
    """The plain-data description of a model that its ``factory`` receives: :data:`META_FIELDS` as a dict (the history
    excluded)."""
    return {name: getattr(model, name) for name in META_FIELDS}


def resolve_factory(path: str) -> Callable[[Any, dict, str], tuple[Predict, Callable[[np.ndarray], np.ndarray] | None]]:
    """The predict factory named ``"package.module:function"`` (imported now); a clear error when it does not exist."""
    import importlib

    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"a predict factory is named 'package.module:function', got {path!r}")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"the predict factory {path!r} cannot be imported: {err}") from err
    return fn


def attach_predictors(model: BenchmarkModel, precision: str = "auto") -> BenchmarkModel:
    """Set ``model.predict`` and ``model.anomaly_score`` from its ``factory`` and ``module`` (both must be set)."""
    if model.module is None or not model.factory:
        raise ValueError(f"{model.key}: attach_predictors needs both module and factory")
    predict, anomaly = resolve_factory(model.factory)(model.module, model_meta(model), precision)
    model.predict, model.anomaly_score = predict, anomaly
    return model
