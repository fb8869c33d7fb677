"""One training loop for every classifier, built on Hugging Face Accelerate.

The same call runs on one CPU, one GPU, or several GPUs under ``accelerate launch``.
Runs are seeded per epoch, so a run interrupted after any epoch and resumed from its
checkpoint ends with the same weights as an uninterrupted run.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from tqdm import tqdm

from wbcstudy.hardware import cpu_has_native_bf16

Augment = Callable[[torch.Tensor], torch.Tensor]
LossFn = Callable[[object, torch.Tensor], torch.Tensor]


@dataclass
class TrainConfig:
    """Hyper-parameters and run settings of one training run."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"  # "adamw", "adam" or "sgd" (momentum 0.9, nesterov)
    scheduler: str = "onecycle"  # "onecycle" (warm-up then cosine decay, per step), "cosine", "constant" or "wsd"
    cooldown: float = 0.2  # "wsd": the share of the steps spent decaying the learning rate linearly to 0 at the end
    budget_check: bool = False  # "wsd": also cool a copy down from half the budget, for the budget-sensitivity plateau
    seed: int = 0
    device: str = "auto"  # "auto", "cpu", "cuda" or "mps"; an explicit GPU that is not there is an error
    precision: str = "auto"  # "auto" (bf16 where the hardware runs it natively), "bf16" or "fp32"
    channels_last: bool = True
    class_weights: Sequence[float] | str | None = None  # None, "balanced" or one weight per class
    label_smoothing: float = 0.0
    monitor: str = "val_accuracy"  # history column used to keep the best epoch ("val_loss" is minimised)
    patience: int | None = None  # stop when the monitored value has not improved for this many epochs
    stop_at_plateau: bool = False  # stop once the monitored history has reached its plateau (reached_plateau, defaults)
    min_epochs: int = 0  # early stopping (patience or stop_at_plateau) waits for at least this many epochs
    chance_gap: float = 0.1  # ... and never fires while validation accuracy is within this of chance (1 / classes)
    checkpoint: str | Path | None = None  # checkpoint file written after every epoch; resumed from when present
    stop_after_epoch: int | None = None  # end the run after this epoch (simulates an interruption; for tests)
    eval_batch_size: int = 256
    grad_clip: float | None = None
    progress: bool = True
    trainable: Callable[[nn.Module], list[nn.Parameter]] | None = field(default=None, repr=False)


@dataclass
class TrainResult:
    """What a training run returns: the best model, its history and the run's facts."""

    model: nn.Module
    history: pd.DataFrame
    best_epoch: int
    best_score: float
    seconds: float
    device: str
    precision: str
    completed: bool
    #: with ``budget_check``: the monitored value after a cool-down from half the budget and at the full budget
    budget_scores: dict[str, float] = field(default_factory=dict)

    def reached_plateau_by_budget(self, tol: float) -> bool | None:
        """The budget-sensitivity plateau test: doubling the budget changed the monitored value by less than ``tol``
        (None without ``budget_check``). Unlike a run's own history, it can fail under any fixed schedule."""
        if not self.budget_scores:
            return None
        return abs(self.budget_scores["full"] - self.budget_scores["half"]) < tol


def select_device(requested: str = "auto") -> torch.device:
    """The device to train on; an explicitly requested accelerator that is not available raises an error."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device={requested!r} was requested but no CUDA GPU is available; use device='auto' or 'cpu'")
    if requested == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RuntimeError("device='mps' was requested but Apple's MPS backend is not available; use 'auto' or 'cpu'")
    if requested not in {"cpu", "mps"} and not requested.startswith("cuda"):
        raise ValueError(f"unknown device {requested!r}: use 'auto', 'cpu', 'cuda' or 'mps'")
    return torch.device(requested)


PRECISIONS = ("auto", "bf16", "fp32")


def forced_precision() -> str | None:
    """The precision ``WBCSTUDY_PRECISION`` forces on every model (``bf16`` or ``fp32``), or None for ``auto``/unset."""
    import os

    value = os.environ.get("WBCSTUDY_PRECISION", "auto").strip().lower() or "auto"
    if value not in PRECISIONS:
        raise ValueError(f"WBCSTUDY_PRECISION={value!r} is not one of {', '.join(PRECISIONS)}")
    return None if value == "auto" else value


def select_precision(requested: str, device: torch.device) -> str:
    """``"bf16"`` or ``"fp32"``: ``WBCSTUDY_PRECISION`` when it forces one, else the request, ``auto`` meaning bf16 where native."""
    if requested not in PRECISIONS:
        raise ValueError(f"unknown precision {requested!r}: use 'auto', 'bf16' or 'fp32'")
    requested = forced_precision() or requested
    if requested in {"bf16", "fp32"}:
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_has_native_bf16() else "fp32"
    return "fp32"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch, and ask torch for deterministic algorithms."""
    from accelerate.utils import set_seed

    set_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def _accelerator(device: torch.device, precision: str):
    """An Accelerator for this device and precision (the process-wide state is reset between runs)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    if AcceleratorState._shared_state and AcceleratorState().mixed_precision != ("bf16" if precision == "bf16" else "no"):
        AcceleratorState._reset_state(reset_partial_state=False)
        GradientState._reset_state()
    return Accelerator(cpu=device.type == "cpu", mixed_precision="bf16" if precision == "bf16" else "no")


def _class_weight_tensor(weights: Sequence[float] | str | None, y: torch.Tensor, n_classes: int) -> torch.Tensor | None:
    """Class weights for cross-entropy: explicit, or "balanced" (n / (k * count_c)) from the training labels."""
    if weights is None:
        return None
    if isinstance(weights, str):
        if weights != "balanced":
            raise ValueError(f"class_weights must be None, 'balanced' or a sequence, got {weights!r}")
        counts = torch.bincount(y, minlength=n_classes).float()
        if (counts == 0).any():
            raise ValueError(f"class_weights='balanced' needs every class in the training set; counts: {counts.tolist()}")
        return counts.sum() / (n_classes * counts)
    w = torch.as_tensor(list(weights), dtype=torch.float32)
    if w.numel() != n_classes:
        raise ValueError(f"{w.numel()} class weights given for {n_classes} classes")
    return w


def logits_of(outputs: object) -> torch.Tensor:
    """The logits of a model's output (the first element when a model returns a tuple, e.g. logits and features)."""
    return outputs[0] if isinstance(outputs, (tuple, list)) else outputs  # type: ignore[index]


def _make_optimizer(params: list[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimiser named in the config."""
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}: use 'adamw', 'adam' or 'sgd'")


def _make_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
    """The per-step learning-rate schedule named in the config."""
    total = max(1, cfg.epochs * steps_per_epoch)
    if cfg.scheduler == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total, pct_start=0.15)
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    if cfg.scheduler == "constant":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    if cfg.scheduler == "wsd":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: wsd_factor(step, total, cfg.cooldown))
    raise ValueError(f"unknown scheduler {cfg.scheduler!r}: use 'onecycle', 'cosine', 'constant' or 'wsd'")


#: The warm-up of the "wsd" schedule, as a share of its steps.
WSD_WARMUP = 0.05


def wsd_factor(step: int, total: int, cooldown: float) -> float:
    """The warmup-stable-decay schedule's learning-rate factor at ``step`` of ``total`` (Hägele et al. 2024): linear
    warm-up over the first 5 % of the steps, constant, then a linear decay to 0 over the last ``cooldown`` share."""
    if not 0 < cooldown < 1:
        raise ValueError(f"cooldown must be a share of the steps between 0 and 1, got {cooldown}")
    warmup, decay_start = max(1, round(WSD_WARMUP * total)), total - max(1, round(cooldown * total))
    if step < warmup:
        return (step + 1) / warmup
    if step < decay_start:
        return 1.0
    return max(0.0, (total - step) / (total - decay_start))


def _better(value: float, best: float, monitor: str) -> bool:
    """Whether a monitored value improves on the best so far."""
    if math.isnan(best):
        return True
    return value < best if monitor.endswith("loss") else value > best


def fit(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor] | None,
    config: TrainConfig,
    augment: Augment | None = None,
    loss_fn: LossFn | None = None,
    n_classes: int | None = None,
) -> TrainResult:
    """Train ``model`` on ``train`` (inputs, integer labels), keep the epoch best on ``val``, and return it loaded."""
    cfg = config
    x_train, y_train = train
    y_train = torch.as_tensor(y_train, dtype=torch.long)
    if len(x_train) != len(y_train):
        raise ValueError(f"{len(x_train)} training inputs but {len(y_train)} labels")
    if len(x_train) == 0:
        raise ValueError("the training set is empty")
    n_classes = n_classes or int(y_train.max()) + 1
    device = select_device(cfg.device)
    precision = select_precision(cfg.precision, device)
    seed_everything(cfg.seed)
    accelerator = _accelerator(device, precision)

    weight = _class_weight_tensor(cfg.class_weights, y_train, n_classes)
    criterion: nn.Module | None = None
    if loss_fn is None:
        criterion = nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing)
        loss_fn = lambda out, y: criterion(logits_of(out), y)  # noqa: E731
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    params = cfg.trainable(model) if cfg.trainable else [p for p in model.parameters() if p.requires_grad]
    optimizer = _make_optimizer(params, cfg)
    loader = DataLoader(TensorDataset(x_train, y_train), batch_size=cfg.batch_size, shuffle=True, drop_last=len(x_train) > cfg.batch_size)
    scheduler = _make_scheduler(optimizer, cfg, len(loader))
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    if criterion is not None:
        criterion.to(accelerator.device)

    history: list[dict[str, float]] = []
    resumed_budget: dict[str, float] = {}
    start_epoch, best_epoch, best_score = 1, 0, float("nan")
    best_state: dict[str, torch.Tensor] | None = None
    ckpt_path = Path(cfg.checkpoint) if cfg.checkpoint else None
    if ckpt_path is not None and ckpt_path.is_file():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        accelerator.unwrap_model(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history, best_state = state["history"], state["best_state"]
        best_epoch, best_score = state["best_epoch"], state["best_score"]
        start_epoch = state["epoch"] + 1
        resumed_budget = state.get("budget_scores", {})

    completed = True
    budget_scores: dict[str, float] = dict(resumed_budget)
    half_epochs = 0
    if cfg.budget_check:
        if cfg.scheduler != "wsd" or not 0 < cfg.cooldown < 0.5 or cfg.epochs < 4:
            raise ValueError("budget_check needs the 'wsd' scheduler, a cooldown under 0.5 and at least 4 epochs")
        half_epochs = cfg.epochs // 2
    start = time.perf_counter()
    bar = tqdm(range(start_epoch, cfg.epochs + 1), desc="epochs", disable=not cfg.progress or not accelerator.is_main_process,
               file=sys.stdout, initial=start_epoch - 1, total=cfg.epochs, mininterval=5, ascii=True, leave=False)
    for epoch in bar:
        epoch_start = time.perf_counter()
        torch.manual_seed(cfg.seed * 100_003 + epoch)  # shuffling, augmentation and dropout depend on (seed, epoch) only
        row = {"epoch": epoch, **_train_epoch(accelerator, model, loader, optimizer, scheduler, loss_fn, augment, cfg)}
        if val is not None:
            row.update(_validate(accelerator, model, val, loss_fn, cfg.eval_batch_size, n_classes))
        row["seconds"] = time.perf_counter() - epoch_start
        history.append(row)
        if half_epochs and epoch == half_epochs and val is not None:  # the budget-sensitivity branch, off the stable phase
            budget_scores["half"] = _cooled_down_score(accelerator, model, optimizer, loader, loss_fn, augment, cfg, val,
                                                       n_classes, max(1, round(cfg.cooldown * half_epochs)))
        score = row.get(cfg.monitor, float("nan"))
        if val is None or _better(score, best_score, cfg.monitor):
            best_epoch, best_score = epoch, float(score)
            best_state = {k: v.detach().cpu().clone() for k, v in accelerator.unwrap_model(model).state_dict().items()}
        bar.set_postfix({k: round(v, 4) for k, v in row.items() if k.startswith("val_") or k == "train_loss"})
        if ckpt_path is not None and accelerator.is_main_process:
            ckpt_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = ckpt_path.with_suffix(".tmp")
            torch.save({"model": accelerator.unwrap_model(model).state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "epoch": epoch, "history": history,
                        "best_state": best_state, "best_epoch": best_epoch, "best_score": best_score,
                        "budget_scores": budget_scores}, tmp)
            tmp.replace(ckpt_path)
        if may_stop_early(history, cfg, n_classes):
            if cfg.patience is not None and epoch - best_epoch >= cfg.patience:
                break
            if cfg.stop_at_plateau and reached_plateau(
                    [h.get(cfg.monitor, float("nan")) for h in history], mode="min" if cfg.monitor.endswith("loss") else "max"):
                break
        if cfg.stop_after_epoch is not None and epoch >= cfg.stop_after_epoch and epoch < cfg.epochs:
            completed = False
            break
    bar.close()
    if budget_scores and completed and len(history) == cfg.epochs:
        budget_scores["full"] = float(history[-1].get(cfg.monitor, float("nan")))
    else:
        budget_scores = {}  # stopped early or interrupted: no full budget to compare with
    final = accelerator.unwrap_model(model)
    if best_state is not None:
        final.load_state_dict(best_state)
    return TrainResult(model=final, history=pd.DataFrame(history), best_epoch=best_epoch, best_score=best_score,
                       seconds=time.perf_counter() - start, device=str(accelerator.device), precision=precision,
                       completed=completed, budget_scores=budget_scores)


def _train_epoch(accelerator, model: nn.Module, loader, optimizer, scheduler, loss_fn: LossFn, augment: Augment | None,
                 cfg: TrainConfig) -> dict[str, float]:
    """One pass over ``loader``: forward and loss under the run's autocast, backward, clipping, a step of the optimiser
    and of the schedule per batch; returns the epoch's training loss, accuracy and last learning rate."""
    model.train()
    loss_sum, correct, seen = 0.0, 0, 0
    for xb, yb in loader:
        if augment is not None:
            xb = augment(xb)
        with accelerator.autocast():
            out = model(xb)
            loss = loss_fn(out, yb)
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        if cfg.grad_clip:
            accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        loss_sum += float(loss.detach()) * len(yb)
        correct += int((logits_of(out).argmax(1) == yb).sum())
        seen += len(yb)
    return {"train_loss": loss_sum / seen, "train_accuracy": correct / seen, "lr": float(scheduler.get_last_lr()[0])}


def _cooled_down_score(accelerator, model: nn.Module, optimizer, loader, loss_fn: LossFn, augment: Augment | None,
                       cfg: TrainConfig, val: tuple[torch.Tensor, torch.Tensor], n_classes: int, epochs: int) -> float:
    """The monitored value of a copy of the run whose learning rate decays linearly to 0 over ``epochs`` epochs from
    here: the half-budget run of a warmup-stable-decay schedule, branched off without disturbing the run itself."""
    import copy

    with torch.random.fork_rng():
        branch = copy.deepcopy(accelerator.unwrap_model(model))
        params = cfg.trainable(branch) if cfg.trainable else [p for p in branch.parameters() if p.requires_grad]
        opt = _make_optimizer(params, cfg)
        opt.load_state_dict(copy.deepcopy(optimizer.state_dict()))
        steps = max(1, epochs * len(loader))
        decay = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: max(0.0, (steps - step) / steps))
        for i in range(epochs):
            torch.manual_seed(cfg.seed * 100_003 + 50_021 + i)
            _train_epoch(accelerator, branch, loader, opt, decay, loss_fn, augment, cfg)
        return float(_validate(accelerator, branch, val, loss_fn, cfg.eval_batch_size, n_classes).get(cfg.monitor, float("nan")))


def may_stop_early(history: Sequence[dict[str, float]], cfg: TrainConfig, n_classes: int) -> bool:
    """Whether early stopping may fire after this epoch: at least ``min_epochs`` epochs, and the best validation
    accuracy (balanced where measured) more than ``chance_gap`` above chance, 1 / ``n_classes``.

    Early stopping ends a run; it is not the plateau test. A flat curve at chance (a network that has
    not started to learn) would satisfy patience or the plateau rule, so it never stops a run there.
    """
    if len(history) < max(cfg.min_epochs, 1):
        return False
    scores = [h.get("val_balanced_accuracy", h.get("val_accuracy", float("nan"))) for h in history]
    scores = [s for s in scores if s == s]
    return not scores or max(scores) > 1.0 / n_classes + cfg.chance_gap


@torch.inference_mode()
def _validate(accelerator, model: nn.Module, val: tuple[torch.Tensor, torch.Tensor], loss_fn: LossFn,
              batch_size: int, n_classes: int) -> dict[str, float]:
    """Validation loss, accuracy and balanced accuracy of the current model."""
    from sklearn.metrics import balanced_accuracy_score

    model.eval()
    x_val, y_val = val
    y_val = torch.as_tensor(y_val, dtype=torch.long)
    loss_sum, preds = 0.0, []
    for i in range(0, len(x_val), batch_size):
        xb = x_val[i:i + batch_size].to(accelerator.device)
        yb = y_val[i:i + batch_size].to(accelerator.device)
        with accelerator.autocast():
            out = model(xb)
            loss_sum += float(loss_fn(out, yb)) * len(yb)
        preds.append(logits_of(out).argmax(1).cpu())
    pred = torch.cat(preds).numpy()
    y = y_val.numpy()
    return {"val_loss": loss_sum / len(y), "val_accuracy": float((pred == y).mean()),
            "val_balanced_accuracy": float(balanced_accuracy_score(y, pred))}


@torch.inference_mode()
def predict_proba(model: nn.Module, x: torch.Tensor, batch_size: int = 256, device: str = "auto",
                  precision: str = "auto") -> np.ndarray:
    """Class probabilities (softmax of the logits) for every input, as a float64 NumPy array."""
    dev = select_device(device)
    prec = select_precision(precision, dev)
    model = model.to(dev).eval()
    out = []
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size].to(dev)
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=prec == "bf16"):
            logits = logits_of(model(xb))
        out.append(torch.softmax(logits.float(), dim=1).cpu())
    return torch.cat(out).double().numpy()


@dataclass
class CrossValResult:
    """Held-out predictions of a k-fold cross-validation, one row per image, and each fold's training facts."""

    predictions: pd.DataFrame  # columns: fold, row (index into the images), y, pred, p0..p{C-1}
    histories: dict[int, pd.DataFrame]
    seconds: dict[int, float]
    train_sizes: dict[int, int]
    models: dict[int, nn.Module]  # filled only with keep_models=True


def cross_validate(
    make_model: Callable[[], nn.Module],
    images: torch.Tensor,
    labels: Sequence[int] | np.ndarray,
    folds: Sequence[int] | np.ndarray,
    config: TrainConfig,
    fold_ids: Sequence[int] | None = None,
    train_limit: int | None = None,
    augment: Augment | None = None,
    loss_fn: LossFn | None = None,
    n_classes: int | None = None,
    keep_models: bool = False,
    test_limit: int | None = None,
) -> CrossValResult:
    """k-fold cross-validation: for each fold f, train a fresh ``make_model()`` on the other folds and predict fold f.

    ``folds`` gives each image's fold (from a manifest, fixed before training). Every model is
    trained for ``config.epochs`` epochs and the last epoch is kept: the held-out fold is the
    test set and chooses nothing. ``train_limit`` trains on a stratified subset of that many
    images of the other folds, drawn with seed ``fold`` so that every model compared on a fold
    sees the same images; ``test_limit`` likewise predicts a stratified subset of the held-out fold.
    ``fold_ids`` restricts the run to some folds (default: all, sorted).
    """
    from wbcstudy.data.transforms import stratified_subset

    y_all = np.asarray(labels, dtype=np.int64)
    fold_arr = np.asarray(folds)
    if not (len(images) == len(y_all) == len(fold_arr)):
        raise ValueError(f"images, labels and folds differ in length: {len(images)}, {len(y_all)}, {len(fold_arr)}")
    n_classes = n_classes or int(y_all.max()) + 1
    fold_ids = sorted(int(f) for f in np.unique(fold_arr)) if fold_ids is None else [int(f) for f in fold_ids]
    missing = sorted(set(fold_ids) - set(int(f) for f in np.unique(fold_arr)))
    if missing:
        raise ValueError(f"folds {missing} have no images")
    frames, histories, seconds, sizes, models = [], {}, {}, {}, {}
    for fold in fold_ids:
        train_idx = np.flatnonzero(fold_arr != fold)
        test_idx = np.flatnonzero(fold_arr == fold)
        if train_limit:
            train_idx = train_idx[stratified_subset(y_all[train_idx], train_limit, seed=fold)]
        if test_limit:
            test_idx = test_idx[stratified_subset(y_all[test_idx], test_limit, seed=fold)]
        result = fit(make_model(), (images[train_idx], torch.from_numpy(y_all[train_idx])), None, config,
                     augment=augment, loss_fn=loss_fn, n_classes=n_classes)
        prob = predict_proba(result.model, images[test_idx], batch_size=config.eval_batch_size, device=config.device,
                             precision=config.precision)
        frame = pd.DataFrame({"fold": fold, "row": test_idx, "y": y_all[test_idx], "pred": prob.argmax(1)})
        frames.append(pd.concat([frame, pd.DataFrame(prob, columns=[f"p{k}" for k in range(prob.shape[1])])], axis=1))
        histories[fold], seconds[fold], sizes[fold] = result.history, result.seconds, len(train_idx)
        if keep_models:
            models[fold] = result.model
    return CrossValResult(pd.concat(frames, ignore_index=True), histories, seconds, sizes, models)


def reached_plateau(values: Sequence[float], window: int = 3, tol: float = 0.01, mode: str = "max") -> bool:
    """Whether a validation-metric history has levelled off: a model trained to its plateau, not stopped early.

    True when (1) the best of the last ``window`` values is within ``tol`` of the best of all
    values (the run did not fall away from its best) and (2) those last ``window`` epochs
    improved on the best before them by less than ``tol`` (it has stopped rising). ``mode``
    is ``"max"`` for accuracy-like histories and ``"min"`` for losses. False when there are
    fewer than ``window + 1`` values; NaN epochs are ignored.
    """
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    sign = 1.0 if mode == "max" else -1.0
    history = [sign * float(v) for v in values]
    if len(history) < window + 1:
        return False
    before = [v for v in history[:-window] if v == v]
    recent = [v for v in history[-window:] if v == v]
    if not before or not recent:
        return False
    best_recent, best_before = max(recent), max(before)
    best_all = max(best_recent, best_before)
    return best_recent >= best_all - tol and best_recent - best_before < tol
