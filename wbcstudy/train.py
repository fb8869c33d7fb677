"""One training loop for every model: ``run_task``, and ``fit`` for classifiers on top of it.

``run_task`` owns what every training run needs — seeding, device placement, precision (bf16
autocast around each loss, never around the backward pass), the backward pass, clipping and the
optimiser step, best-weight keeping, early stopping (which never fires before ``min_epochs`` or
near chance) apart from the plateau test, history, timing, and checkpoint/resume. A model brings
only its part, a ``Task`` (d2l's ``training_step``): its batches and its loss steps — a
classifier's cross-entropy (``fit``), HemaX's set loss, Faster R-CNN's loss sum, the diffusion
ε-loss (``models.diffusion``), the DCGAN's discriminator and generator steps (``models.dcgan``).

``fit`` runs on Hugging Face Accelerate: the same call runs on one CPU, one GPU, or several GPUs
under ``accelerate launch``. Runs are seeded per epoch, so a run interrupted after any epoch and
resumed from its checkpoint ends with the same weights as an uninterrupted run.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence, TypeVar

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from tqdm import tqdm

from wbcstudy.hardware import cpu_has_native_bf16

T = TypeVar("T")

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

    def plateau(self, tol: float = 0.01, window: int = 3, column: str = "val_accuracy") -> bool:
        """Whether the run reached its plateau — the study's one rule: by the budget-sensitivity test where the run
        made one (``budget_check``), else by its own ``column`` history (:func:`reached_plateau` over ``window``
        epochs), which a one-cycle schedule, whose last epoch is nearly always its best, cannot fail."""
        by_budget = self.reached_plateau_by_budget(tol)
        if by_budget is not None:
            return bool(by_budget)
        return bool(reached_plateau(self.history[column].tolist(), window=window, tol=tol))


def select_device(requested: str = "auto") -> torch.device:
    """The device to train on; an explicitly requested accelerator that is not available raises an error."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device={requested!r} was requested but no CUDA GPU is available; use device='auto' or "
                           "'cpu'")
    if requested == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RuntimeError("device='mps' was requested but Apple's MPS backend is not available; use 'auto' or 'cpu'")
    if requested not in {"cpu", "mps"} and not requested.startswith("cuda"):
        raise ValueError(f"unknown device {requested!r}: use 'auto', 'cpu', 'cuda' or 'mps'")
    return torch.device(requested)


PRECISIONS = ("auto", "bf16", "fp32")


#: The precision forced on every model of this process (``bf16``/``fp32``), or None: set by an entry (the CLI, the
#: runner, a chapter's set-up, the test session) through :func:`force_precision`, read by :func:`select_precision`.
_FORCED: list[str | None] = [None]


def precision_from_environment() -> str | None:
    """What ``WBCSTUDY_PRECISION`` asks for (``bf16``/``fp32``), None for ``auto`` or unset; a clear error otherwise.

    Only the entries call this, once, and hand the value to :func:`force_precision`; nothing else reads the variable.
    """
    import os

    value = os.environ.get("WBCSTUDY_PRECISION", "auto").strip().lower() or "auto"
    if value not in PRECISIONS:
        raise ValueError(f"WBCSTUDY_PRECISION={value!r} is not one of {', '.join(PRECISIONS)}")
    return None if value == "auto" else value


def force_precision(precision: str | None) -> None:
    """Force ``precision`` (``bf16``/``fp32``) on every model this process trains or evaluates from now on; ``auto``
    or None lifts the force (each call's own request, ``auto`` meaning bf16 where native, then holds)."""
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: use one of {', '.join(PRECISIONS)}")
    _FORCED[0] = None if precision in (None, "auto") else precision


def forced_precision() -> str | None:
    """The precision forced on every model (``bf16`` or ``fp32``, see :func:`force_precision`), or None."""
    return _FORCED[0]


@contextlib.contextmanager
def precision_forced(precision: str) -> Iterator[None]:
    """Force ``precision`` on everything inside (``auto`` leaves the current force as it is), then restore it."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: use one of {', '.join(PRECISIONS)}")
    before = _FORCED[0]
    if precision != "auto":
        _FORCED[0] = precision
    try:
        yield
    finally:
        _FORCED[0] = before


def select_precision(requested: str, device: torch.device) -> str:
    """``"bf16"`` or ``"fp32"``: the forced precision when one is (:func:`force_precision`), else the request, ``auto``
    meaning bf16 where native."""
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


def seed_everything(seed: int | None, deterministic: bool | None = True) -> None:
    """Seed Python, NumPy and torch (None: leave them), and set torch's deterministic algorithms (warn only; None:
    leave the setting as it is)."""
    from accelerate.utils import set_seed

    if seed is not None:
        set_seed(seed)
    if deterministic is not None:
        torch.use_deterministic_algorithms(deterministic, warn_only=True)


def _accelerator(device: torch.device, precision: str):
    """An Accelerator for this device and precision (the process-wide state is reset between runs)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    if (AcceleratorState._shared_state
            and AcceleratorState().mixed_precision != ("bf16" if precision == "bf16" else "no")):
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
            raise ValueError("class_weights='balanced' needs every class in the training set; counts: "
                             f"{counts.tolist()}")
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


# --------------------------------------------------------------------------- the engine every model trains through
@dataclass
class Step:
    """One optimiser step of a training step: ``loss()`` (run under the run's autocast), its optimiser, and the
    parameters whose gradient norm ``grad_clip`` bounds (None: the optimiser's)."""

    loss: Callable[[], torch.Tensor]
    optimizer: torch.optim.Optimizer
    clip: Callable[[], Iterable[nn.Parameter]] | None = None


class Task:
    """A model's part of training, in the spirit of d2l's ``training_step``: ``run_task`` owns the rest.

    A subclass sets ``modules`` (name → module: placed on the run's device, put in training mode every epoch, and
    kept at their best epoch) and defines ``batches`` (one epoch's batches, drawing its own random numbers) and
    ``training_step`` (the ``Step``s of one batch: one for most models, the discriminator's then the generator's for a
    GAN). The hooks ``after_step`` (bookkeeping, an EMA; True ends the run after this epoch), ``end_epoch`` (the
    epoch's history row: validation, a schedule step) and ``state_dict``/``load_state_dict`` (what a checkpoint needs
    beyond the modules: optimisers, EMA, counters) are optional. ``device`` and ``precision`` are set by the engine
    before ``batches`` is first called; ``autocast()`` is the run's autocast, for the task's own evaluation passes.
    """

    modules: dict[str, nn.Module]
    device: torch.device = torch.device("cpu")
    precision: str = "fp32"
    #: whether the engine adds an ``epoch`` column to the task's history rows
    epoch_column: bool = True

    def autocast(self) -> torch.autocast:
        """bf16 autocast on the run's device when the run is in bf16, else a disabled context."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def batches(self, epoch: int) -> Iterable[object]:
        raise NotImplementedError

    def training_step(self, batch: object) -> Sequence[Step]:
        raise NotImplementedError

    def after_step(self, batch: object, losses: list[torch.Tensor]) -> bool:
        return False

    def end_epoch(self, epoch: int, seconds: float) -> dict[str, float]:
        return {"seconds": seconds}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        return None


@dataclass
class EngineConfig:
    """How ``run_task`` runs a task: length, seeding, device and precision, clipping, best epoch, stopping,
    checkpoints."""

    epochs: int
    seed: int | None = 0  # seeds Python, NumPy and torch before the task is built; None: the caller has seeded
    deterministic: bool | None = True  # torch's deterministic algorithms (warn only); None leaves the setting alone
    device: str = "auto"
    precision: str = "auto"  # "auto", "bf16" or "fp32" (select_precision: bf16 autocast around each loss only)
    grad_clip: float | None = None
    monitor: str | None = None  # history column that picks the best epoch ("…loss" is minimised); None: the last
    patience: int | None = None  # early stopping: no improvement of ``monitor`` for this many epochs
    stop_at_plateau: bool = False  # early stopping: ``monitor``'s history has levelled off (reached_plateau)
    plateau_tol: float = 0.01
    min_epochs: int = 0  # early stopping waits for at least this many epochs ...
    chance_gap: float = 0.1  # ... and never fires while validation accuracy is within this of chance
    n_classes: int | None = None  # for the chance level (None: no chance guard)
    stop: Callable[[list[dict[str, float]]], bool] | None = None  # a task's own end condition, given the history
    checkpoint: str | Path | None = None  # written every ``checkpoint_every`` epochs and at the end; resumed from
    checkpoint_every: int = 1
    stop_after_epoch: int | None = None  # end the run after this epoch (simulates an interruption; for tests)
    progress: bool = False  # a progress bar over the epochs


@dataclass
class TaskResult:
    """What ``run_task`` returns: the task (its modules at their best epoch), the history and the run's facts."""

    task: Task
    history: pd.DataFrame
    best_epoch: int
    best_score: float
    seconds: float
    device: str
    precision: str
    completed: bool
    epochs_done: int


def _clip_parameters(step: Step) -> list[nn.Parameter]:
    if step.clip is not None:
        return list(step.clip())
    return [p for group in step.optimizer.param_groups for p in group["params"]]


def run_task(make_task: Callable[[], Task], cfg: EngineConfig) -> TaskResult:
    """Train the task ``make_task()`` builds (after seeding) for up to ``cfg.epochs`` epochs: the one training loop.

    Per batch, each of the task's ``Step``s computes its loss under bf16 autocast where the run is in bf16 (the
    backward pass, clipping and the optimiser step stay outside it), then zero-grad, backward, clip, step. Per epoch,
    the task's row joins the history, the best epoch by ``cfg.monitor`` is kept (its modules' weights are restored at
    the end), a checkpoint is written, and early stopping is asked (``may_stop_early`` first: never before
    ``min_epochs`` or near chance). A run interrupted after an epoch and resumed from its checkpoint ends as an
    uninterrupted one when the task's batches depend on (seed, epoch) alone and its state travels in ``state_dict``.
    """
    import copy

    device = select_device(cfg.device)
    precision = select_precision(cfg.precision, device)
    seed_everything(cfg.seed, cfg.deterministic)
    task = make_task()
    task.device, task.precision = device, precision
    for module in task.modules.values():
        module.to(device)
    monitor = cfg.monitor
    history: list[dict[str, float]] = []
    start_epoch, best_epoch, best_score, best_state = 1, 0, float("nan"), None
    ckpt = Path(cfg.checkpoint) if cfg.checkpoint else None
    if ckpt is not None and ckpt.is_file():
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        for name, module in task.modules.items():
            module.load_state_dict(state["modules"][name])
        task.load_state_dict(state["task"])
        history, best_state = state["history"], state["best_state"]
        best_epoch, best_score, start_epoch = state["best_epoch"], state["best_score"], state["epoch"] + 1

    def save(epoch: int) -> None:
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        tmp = ckpt.with_suffix(ckpt.suffix + ".tmp")
        torch.save({"modules": {n: m.state_dict() for n, m in task.modules.items()}, "task": task.state_dict(),
                    "history": history, "best_state": best_state, "best_epoch": best_epoch, "best_score": best_score,
                    "epoch": epoch}, tmp)
        tmp.replace(ckpt)

    completed, epoch = True, start_epoch - 1
    start = time.perf_counter()
    bar = tqdm(range(start_epoch, cfg.epochs + 1), desc=type(task).__name__.strip("_").lower(),
               disable=not cfg.progress,
               file=sys.stdout, initial=start_epoch - 1, total=cfg.epochs, mininterval=5, ascii=True, leave=False)
    for epoch in bar:
        epoch_start = time.perf_counter()
        for module in task.modules.values():
            module.train()
        ended = False
        for batch in task.batches(epoch):
            losses = []
            for step in task.training_step(batch):
                with task.autocast():
                    loss = step.loss()
                step.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip:
                    nn.utils.clip_grad_norm_(_clip_parameters(step), cfg.grad_clip)
                step.optimizer.step()
                losses.append(loss.detach())
            if task.after_step(batch, losses):
                ended = True
                break
        row = task.end_epoch(epoch, time.perf_counter() - epoch_start)
        if row:
            history.append({"epoch": epoch, **row} if task.epoch_column else dict(row))
            score = float(history[-1].get(monitor, float("nan"))) if monitor is not None else float("nan")
            if monitor is not None and _better(score, best_score, monitor):
                best_epoch, best_score = epoch, score
                best_state = {n: copy.deepcopy(m.state_dict()) for n, m in task.modules.items()}
        if ckpt is not None and (epoch % cfg.checkpoint_every == 0 or epoch == cfg.epochs or ended):
            save(epoch)
        if ended or (cfg.stop is not None and cfg.stop(history)):
            break
        if monitor is not None and may_stop_early(history, cfg, cfg.n_classes or 0):
            scores = [h.get(monitor, float("nan")) for h in history]
            if cfg.patience is not None and epoch - best_epoch >= cfg.patience:
                break
            if cfg.stop_at_plateau and reached_plateau(scores, mode="min" if monitor.endswith("loss") else "max",
                                                       tol=cfg.plateau_tol):
                break
        if cfg.stop_after_epoch is not None and epoch >= cfg.stop_after_epoch and epoch < cfg.epochs:
            if ckpt is not None:
                save(epoch)
            completed = False
            break
    bar.close()
    if best_state is not None:
        for name, module in task.modules.items():
            module.load_state_dict(best_state[name])
    if monitor is None:
        best_epoch = epoch  # nothing to choose by: the last epoch is the result
    return TaskResult(task=task, history=pd.DataFrame(history), best_epoch=best_epoch, best_score=best_score,
                      seconds=time.perf_counter() - start, device=str(device), precision=precision, completed=completed,
                      epochs_done=epoch)


def fit(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor] | None,
    config: TrainConfig,
    augment: Augment | None = None,
    loss_fn: LossFn | None = None,
    n_classes: int | None = None,
) -> TrainResult:
    """Train ``model`` on ``train`` (inputs, integer labels), keep the epoch best on ``val``, and return it loaded.

    A classifier's part of ``run_task`` (``_ClassifierTask``, on Hugging Face Accelerate: the same call runs on one
    CPU, one GPU or several under ``accelerate launch``); with ``budget_check`` a copy cooled down from half the
    budget gives the budget-sensitivity plateau test (``TrainResult.reached_plateau_by_budget``).
    """
    cfg = config
    x_train, y_train = train
    y_train = torch.as_tensor(y_train, dtype=torch.long)
    if len(x_train) != len(y_train):
        raise ValueError(f"{len(x_train)} training inputs but {len(y_train)} labels")
    if len(x_train) == 0:
        raise ValueError("the training set is empty")
    n_classes = n_classes or int(y_train.max()) + 1
    half_epochs = 0
    if cfg.budget_check:
        if cfg.scheduler != "wsd" or not 0 < cfg.cooldown < 0.5 or cfg.epochs < 4:
            raise ValueError("budget_check needs the 'wsd' scheduler, a cooldown under 0.5 and at least 4 epochs")
        half_epochs = cfg.epochs // 2
    device = select_device(cfg.device)
    precision = select_precision(cfg.precision, device)

    def make_task() -> _ClassifierTask:
        return _ClassifierTask(model, (x_train, y_train), val, cfg, augment, loss_fn, n_classes,
                               _accelerator(device, precision), half_epochs)

    run = run_task(make_task, EngineConfig(
        epochs=cfg.epochs, seed=cfg.seed, deterministic=True, device=cfg.device, precision=cfg.precision,
        grad_clip=cfg.grad_clip, monitor=cfg.monitor if val is not None else None, patience=cfg.patience,
        stop_at_plateau=cfg.stop_at_plateau, min_epochs=cfg.min_epochs, chance_gap=cfg.chance_gap, n_classes=n_classes,
        checkpoint=cfg.checkpoint, stop_after_epoch=cfg.stop_after_epoch, progress=cfg.progress))
    task = run.task
    budget_scores = dict(task.budget_scores)
    if budget_scores and run.completed and len(run.history) == cfg.epochs:
        budget_scores["full"] = float(run.history[cfg.monitor].iloc[-1])
    else:
        budget_scores = {}  # stopped early or interrupted: no full budget to compare with
    return TrainResult(model=task.accelerator.unwrap_model(task.model), history=run.history, best_epoch=run.best_epoch,
                       best_score=run.best_score, seconds=run.seconds, device=str(task.accelerator.device),
                       precision=run.precision, completed=run.completed, budget_scores=budget_scores)


class _ClassifierTask(Task):
    """A classifier's part of ``run_task``: shuffled batches (seeded per epoch), cross-entropy (or ``loss_fn``), a
    schedule step per batch, a validation pass per epoch and, with ``budget_check``, the half-budget cool-down."""

    def __init__(self, model: nn.Module, train: tuple[torch.Tensor, torch.Tensor],
                 val: tuple[torch.Tensor, torch.Tensor] | None, cfg: TrainConfig, augment: Augment | None,
                 loss_fn: LossFn | None, n_classes: int, accelerator, half_epochs: int,
                 optimizer: torch.optim.Optimizer | None = None, scheduler=None, seed_offset: int = 0) -> None:
        self.cfg, self.val, self.augment, self.n_classes, self.accelerator = cfg, val, augment, n_classes, accelerator
        self.half_epochs, self.seed_offset = half_epochs, seed_offset
        x_train, y_train = train
        criterion: nn.Module | None = None
        if loss_fn is None:
            weight = _class_weight_tensor(cfg.class_weights, y_train, n_classes)
            criterion = nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing)
            loss_fn = lambda out, y: criterion(logits_of(out), y)  # noqa: E731
        self.loss_fn = loss_fn
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if optimizer is None:
            optimizer = _make_optimizer(cfg.trainable(model) if cfg.trainable else
                                        [p for p in model.parameters() if p.requires_grad], cfg)
        loader = DataLoader(TensorDataset(x_train, y_train), batch_size=cfg.batch_size, shuffle=True,
                            drop_last=len(x_train) > cfg.batch_size)
        self.scheduler = scheduler or _make_scheduler(optimizer, cfg, len(loader))
        self.model, self.optimizer, self.loader = accelerator.prepare(model, optimizer, loader)
        if criterion is not None:
            criterion.to(accelerator.device)
        self.modules = {"model": self.model}
        self.budget_scores: dict[str, float] = {}

    def autocast(self):
        return self.accelerator.autocast()

    def batches(self, epoch: int):
        torch.manual_seed(self.cfg.seed * 100_003 + self.seed_offset + epoch)  # shuffling, augmentation, dropout
        self.epoch_start, self.loss_sum, self.correct, self.seen = time.perf_counter(), 0.0, 0, 0
        for xb, yb in self.loader:
            yield (self.augment(xb) if self.augment is not None else xb), yb

    def training_step(self, batch) -> list[Step]:
        xb, yb = batch

        def loss() -> torch.Tensor:
            self.out = self.model(xb)
            return self.loss_fn(self.out, yb)

        return [Step(loss, self.optimizer, clip=self.model.parameters)]

    def after_step(self, batch, losses: list[torch.Tensor]) -> bool:
        yb = batch[1]
        self.scheduler.step()
        self.loss_sum += float(losses[0]) * len(yb)
        self.correct += int((logits_of(self.out).argmax(1) == yb).sum())
        self.seen += len(yb)
        return False

    def end_epoch(self, epoch: int, seconds: float) -> dict[str, float]:
        row = {"train_loss": self.loss_sum / self.seen, "train_accuracy": self.correct / self.seen,
               "lr": float(self.scheduler.get_last_lr()[0])}
        if self.val is not None:
            row.update(_validate(self.accelerator, self.model, self.val, self.loss_fn, self.cfg.eval_batch_size,
                                 self.n_classes))
        row["seconds"] = time.perf_counter() - self.epoch_start
        if self.half_epochs and epoch == self.half_epochs and self.val is not None:  # off the stable phase
            self.budget_scores["half"] = self._cooled_down_score(max(1, round(self.cfg.cooldown * self.half_epochs)))
        return row

    def _cooled_down_score(self, epochs: int) -> float:
        """The monitored value of a copy of the run whose learning rate decays linearly to 0 over ``epochs`` epochs
        from here: the half-budget run of a warmup-stable-decay schedule, without disturbing the run itself."""
        import copy

        with torch.random.fork_rng():
            branch = copy.deepcopy(self.accelerator.unwrap_model(self.model))
            params = (self.cfg.trainable(branch) if self.cfg.trainable
                      else [p for p in branch.parameters() if p.requires_grad])
            optimizer = _make_optimizer(params, self.cfg)
            optimizer.load_state_dict(copy.deepcopy(self.optimizer.state_dict()))
            steps = max(1, epochs * len(self.loader))
            decay = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, (steps - step) / steps))
            cooled = _ClassifierTask(branch, self.loader.dataset.tensors, self.val,
                                     dataclasses.replace(self.cfg, channels_last=False),
                                     self.augment, self.loss_fn, self.n_classes, self.accelerator, 0,
                                     optimizer=optimizer, scheduler=decay, seed_offset=50_020)
            run = run_task(lambda: cooled,
                           EngineConfig(epochs=epochs, seed=None, deterministic=None, device=self.device.type,
                                        precision=self.precision, grad_clip=self.cfg.grad_clip))
        return float(run.history[self.cfg.monitor].iloc[-1])

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "budget_scores": self.budget_scores}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.budget_scores = dict(state["budget_scores"])


def may_stop_early(history: Sequence[dict[str, float]], cfg: TrainConfig | EngineConfig, n_classes: int) -> bool:
    """Whether early stopping may fire after this epoch: at least ``min_epochs`` epochs, and the best validation
    accuracy (balanced where measured) more than ``chance_gap`` above chance, 1 / ``n_classes`` (0: no chance guard).

    Early stopping ends a run; it is not the plateau test. A flat curve at chance (a network that has
    not started to learn) would satisfy patience or the plateau rule, so it never stops a run there.
    """
    if len(history) < max(cfg.min_epochs, 1):
        return False
    scores = [h.get("val_balanced_accuracy", h.get("val_accuracy", float("nan"))) for h in history]
    scores = [s for s in scores if s == s]
    return not scores or not n_classes or max(scores) > 1.0 / n_classes + cfg.chance_gap


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


def seed_key(key: str, seed: int) -> str:
    """A seeded run's key in a chapter's dict of runs: ``<model key>_seed<seed>``."""
    return f"{key}_seed{int(seed)}"


def seeded(entries: Mapping[str, T], key: str) -> dict[str, T]:
    """The entries of model ``key``'s seeded runs (keys ``seed_key(key, k)``), in their order (empty if none)."""
    import re

    pattern = re.compile(rf"{re.escape(key)}_seed\d+")
    return {k: v for k, v in entries.items() if pattern.fullmatch(k)}


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
