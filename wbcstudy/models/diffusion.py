"""Class-conditional pixel-space diffusion model (diffusers UNet2DModel + DDPM), its resumable training and DDIM
sampling.

The CytoDiffusion paper fine-tunes Stable Diffusion 1.5 (a latent model, 45x45x4 latents, text-encoder slot fed with
one-hot class vectors). No pretrained weights are available here, so this module trains a small UNet from scratch in
pixel space. Class conditioning is a bias-free linear projection of a class *vector* (one-hot, or a mixup blend of two
one-hots) added to the timestep embedding (``class_embed_type="identity"``): for a one-hot vector it is exactly an
embedding table, and a mixed vector gives the same blend of two embeddings, so class-vector mixup works.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
from diffusers.training_utils import EMAModel, compute_snr
from torch import nn

from wbcstudy.augment import random_dihedral
from wbcstudy.train import Step, Task


@dataclass
class UNetConfig:
    """Shape of the class-conditional UNet (defaults sized for a 2-core CPU at 32 px)."""

    image_size: int = 32
    n_classes: int = 8
    block_out_channels: tuple[int, ...] = (16, 32, 32, 64)  # 0.79 M parameters; convolutions at 32 px dominate the cost
    layers_per_block: int = 1
    attention_levels: tuple[bool, ...] | None = None  # None: self-attention at the lowest resolution only
    norm_num_groups: int = 8

    def __post_init__(self) -> None:
        self.block_out_channels = tuple(int(c) for c in self.block_out_channels)
        if self.attention_levels is None:
            self.attention_levels = (False,) * (len(self.block_out_channels) - 1) + (True,)
        self.attention_levels = tuple(bool(a) for a in self.attention_levels)
        if len(self.attention_levels) != len(self.block_out_channels):
            raise ValueError(f"attention_levels has {len(self.attention_levels)} entries for "
                             f"{len(self.block_out_channels)} blocks")
        if self.image_size % 2 ** (len(self.block_out_channels) - 1):
            raise ValueError(f"image_size {self.image_size} is not divisible by 2**{len(self.block_out_channels) - 1}")
        if self.n_classes < 1:
            raise ValueError(f"n_classes must be positive, got {self.n_classes}")
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            raise ValueError(f"every block width must be divisible by norm_num_groups={self.norm_num_groups}")


class ClassConditionalUNet(nn.Module):
    """ε-predictor ``model(x_t, t, class_vectors)``: a diffusers UNet2DModel plus a class-vector projection.

    ``class_vectors`` is (N, n_classes) float (one-hot or mixed) or (N,) integer labels.
    """

    def __init__(self, config: UNetConfig | None = None) -> None:
        super().__init__()
        self.config = config or UNetConfig()
        c = self.config
        down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in c.attention_levels)
        up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(c.attention_levels))
        self.unet = UNet2DModel(
            sample_size=c.image_size, in_channels=3, out_channels=3, block_out_channels=c.block_out_channels,
            layers_per_block=c.layers_per_block, down_block_types=down, up_block_types=up,
            norm_num_groups=c.norm_num_groups, class_embed_type="identity",
            attention_head_dim=min(32, c.block_out_channels[-1]),
        )
        time_embed_dim = c.block_out_channels[0] * 4
        self.class_projection = nn.Linear(c.n_classes, time_embed_dim, bias=False)
        nn.init.normal_(self.class_projection.weight, std=1.0)  # like nn.Embedding's N(0, 1) rows

    def class_vectors(self, labels: torch.Tensor) -> torch.Tensor:
        """One-hot class vectors for integer labels; float (N, n_classes) vectors pass through."""
        if labels.dtype in (torch.int64, torch.int32, torch.int16, torch.uint8):
            if labels.ndim != 1:
                raise ValueError(f"integer labels must be 1-D, got shape {tuple(labels.shape)}")
            if len(labels) and (labels.min() < 0 or labels.max() >= self.config.n_classes):
                raise ValueError(f"labels must lie in [0, {self.config.n_classes}), got {labels.min()}..{labels.max()}")
            return F.one_hot(labels.long(), self.config.n_classes).float()
        if labels.ndim != 2 or labels.shape[1] != self.config.n_classes:
            raise ValueError(f"class vectors must be (N, {self.config.n_classes}), got {tuple(labels.shape)}")
        return labels.float()

    def forward(self, noisy: torch.Tensor, timesteps: torch.Tensor | int, labels: torch.Tensor) -> torch.Tensor:
        vectors = self.class_vectors(labels).to(noisy.device)
        if vectors.shape[0] != noisy.shape[0]:
            raise ValueError(f"{noisy.shape[0]} images but {vectors.shape[0]} class vectors")
        if not torch.is_tensor(timesteps):
            timesteps = torch.full((noisy.shape[0],), int(timesteps), dtype=torch.long, device=noisy.device)
        return self.unet(noisy, timesteps, class_labels=self.class_projection(vectors)).sample


def make_scheduler(num_train_timesteps: int = 1000, beta_schedule: str = "linear") -> DDPMScheduler:
    """The DDPM noise schedule (ε-prediction, T=1000; the DDPM paper's linear betas suit pixel space)."""
    return DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule,
                         prediction_type="epsilon")


def to_model_range(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """uint8 NHWC images → float NCHW in [-1, 1]."""
    images = torch.as_tensor(images)
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 images (N,H,W,3), got {images.dtype} {tuple(images.shape)}")
    return images.permute(0, 3, 1, 2).float().div(127.5).sub(1.0).contiguous()


def from_model_range(images: torch.Tensor) -> np.ndarray:
    """Float NCHW in [-1, 1] → uint8 NHWC (clipped)."""
    out = images.detach().float().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
    return out.permute(0, 2, 3, 1).cpu().numpy()


def class_vector_mixup(x: torch.Tensor, labels: torch.Tensor, n_classes: int, alpha: float,
                       generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup of images and their one-hot class vectors with one λ ~ Beta(α, α) per pair (α <= 0: no mixup)."""
    vectors = F.one_hot(labels, n_classes).float()
    if alpha <= 0:
        return x, vectors
    beta_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    lam = torch.from_numpy(np.random.default_rng(beta_seed).beta(alpha, alpha, size=x.shape[0])).float()
    perm = torch.randperm(x.shape[0], generator=generator)
    mixed_x = lam.view(-1, 1, 1, 1) * x + (1 - lam.view(-1, 1, 1, 1)) * x[perm]
    mixed_v = lam.view(-1, 1) * vectors + (1 - lam.view(-1, 1)) * vectors[perm]
    return mixed_x, mixed_v


def min_snr_weights(scheduler: DDPMScheduler, timesteps: torch.Tensor, gamma: float = 5.0) -> torch.Tensor:
    """Min-SNR-γ loss weights for ε-prediction: min(SNR(t), γ) / SNR(t) (Hang et al. 2023)."""
    snr = compute_snr(scheduler, timesteps)
    return torch.minimum(snr, torch.full_like(snr, gamma)) / snr


@dataclass
class DiffusionTrainConfig:
    """Hyper-parameters of one diffusion training run (step-based; the paper's AdamW / warm-up / clip / EMA recipe)."""

    steps: int = 2000
    batch_size: int = 64
    lr: float = 2e-4
    warmup_steps: int = 100
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0
    ema_decay: float = 0.999  # the paper uses 0.9999 for 45k-140k steps; CPU runs are ~100x shorter
    snr_gamma: float = 5.0
    mixup_alpha: float = 0.3  # Beta(α, α) mixup of image and class vector; 0 switches it off
    augment: bool = True  # a random dihedral symmetry (flips, transpose) per image: wbcstudy.augment.random_dihedral
    seed: int = 0
    checkpoint: str | Path | None = None  # written every ``checkpoint_every`` steps and at the end; resumed from
    checkpoint_every: int = 500
    stop_after_step: int | None = None  # end the run after this step (simulates an interruption; for tests)
    log_every: int = 50
    # "fp32", "bf16" or "auto" (wbcstudy.train.select_precision): bf16 autocasts the UNet forward and loss only
    precision: str = "fp32"


@dataclass
class DiffusionTrainResult:
    """What training returns: the EMA model (used for sampling and classification), the raw model and the history."""

    ema_model: ClassConditionalUNet
    model: ClassConditionalUNet
    scheduler: DDPMScheduler
    history: pd.DataFrame
    steps_done: int
    seconds: float
    completed: bool
    precision: str = "fp32"  # the precision the run used ("fp32" or "bf16")


def _step_generator(seed: int, step: int) -> torch.Generator:
    """The generator of one step's randomness (augmentation, mixup, timesteps, noise): a function of (seed, step)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def _batch_indices(n: int, batch_size: int, seed: int, step: int) -> torch.Tensor:
    """The images of training step ``step``: epochs of seeded permutations, so every image is seen once per epoch."""
    per_epoch = max(1, n // batch_size)
    epoch, position = divmod(step, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7_919 + epoch))
    if n < batch_size:
        return perm
    return perm[position * batch_size:(position + 1) * batch_size]


def _lr_factor(step: int, warmup: int) -> float:
    """Linear warm-up then constant (the paper's schedule)."""
    return min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0


def diffusion_loss(model: nn.Module, scheduler: DDPMScheduler, clean: torch.Tensor, class_vectors: torch.Tensor,
                   generator: torch.Generator, snr_gamma: float | None = 5.0, precision: str = "fp32") -> torch.Tensor:
    """Min-SNR-weighted ε-prediction loss of one batch (timesteps and noise drawn on the CPU from ``generator``).

    ``precision="bf16"`` runs the UNet forward pass and the loss under bf16 autocast; the caller keeps the backward
    pass, clipping, optimiser and EMA outside it (autocast around the whole step stops the UNet learning).
    """
    device = model_device(model)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (clean.shape[0],), generator=generator)
    noise = torch.randn(clean.shape, generator=generator)
    noisy = scheduler.add_noise(clean, noise, t)
    with autocast(device, precision):
        pred = model(noisy.to(device), t.to(device), class_vectors.to(device))
        per_image = F.mse_loss(pred.float(), noise.to(device), reduction="none").mean(dim=(1, 2, 3))
        if snr_gamma:
            per_image = per_image * min_snr_weights(scheduler, t, snr_gamma).to(device)
        return per_image.mean()


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """bf16 autocast on ``device`` when ``precision`` is "bf16", else a disabled (fp32) context."""
    if precision not in ("bf16", "fp32"):
        raise ValueError(f"precision must be 'bf16' or 'fp32' here (resolve 'auto' first), got {precision!r}")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def model_device(model: object) -> torch.device:
    """The device of a module's parameters (CPU for parameter-free callables)."""
    try:
        return next(model.parameters()).device  # type: ignore[attr-defined]
    except (AttributeError, StopIteration):
        return torch.device("cpu")


def train_diffusion(
    model: ClassConditionalUNet,
    images: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray | Sequence[int],
    config: DiffusionTrainConfig | None = None,
    scheduler: DDPMScheduler | None = None,
    progress: bool = False,
    device: str | torch.device = "cpu",
) -> DiffusionTrainResult:
    """Train ``model`` on uint8 NHWC ``images`` with integer ``labels``; resumes from ``config.checkpoint`` if present.

    All randomness of step k depends only on (seed, k), so a run stopped at a checkpoint and resumed ends with
    the same weights as a run straight through (bitwise on CPU). Random draws happen on the CPU; the model, its
    optimiser and EMA live on ``device``. ``config.precision`` goes through ``wbcstudy.train.select_precision``
    (so ``WBCSTUDY_PRECISION`` forces it); bf16 autocasts the forward pass and loss only.
    """
    from wbcstudy.train import EngineConfig, run_task

    cfg = config or DiffusionTrainConfig()
    device = torch.device(device)
    scheduler = scheduler or make_scheduler()
    x_all = to_model_range(images)
    y_all = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if len(x_all) != len(y_all):
        raise ValueError(f"{len(x_all)} images but {len(y_all)} labels")
    if len(x_all) == 0:
        raise ValueError("the training set is empty")
    n_classes = model.config.n_classes
    if y_all.min() < 0 or y_all.max() >= n_classes:
        raise ValueError(f"labels must lie in [0, {n_classes}), got {int(y_all.min())}..{int(y_all.max())}")
    if x_all.shape[-1] != model.config.image_size or x_all.shape[-2] != model.config.image_size:
        raise ValueError(f"images are {tuple(x_all.shape[-2:])} px but the UNet expects {model.config.image_size} px")

    run = run_task(lambda: _DiffusionTask(model, scheduler, x_all, y_all, cfg, device, progress),
                   EngineConfig(epochs=cfg.steps, seed=cfg.seed, deterministic=None, device=str(device),
                                precision=cfg.precision, grad_clip=cfg.grad_clip, checkpoint=cfg.checkpoint,
                                checkpoint_every=cfg.checkpoint_every, stop_after_epoch=cfg.stop_after_step))
    ema_model = copy.deepcopy(model)
    run.task.ema.copy_to(ema_model.parameters())
    ema_model.to(memory_format=torch.channels_last)  # inference only: ~13% more ε-predictions/s on 2 CPU cores
    ema_model.eval()
    model.eval()
    return DiffusionTrainResult(ema_model=ema_model, model=model, scheduler=scheduler,
                                history=pd.DataFrame(run.history, columns=["step", "loss"]), steps_done=run.epochs_done,
                                seconds=run.seconds, completed=run.completed, precision=run.precision)


class _DiffusionTask(Task):
    """The diffusion model's part of ``run_task``: one "epoch" is one optimiser step (the ε-loss of one batch), a
    history row every ``log_every`` steps; all randomness of step k comes from a generator seeded with (seed, k)."""

    epoch_column = False

    def __init__(self, model: ClassConditionalUNet, scheduler: DDPMScheduler, x_all: torch.Tensor, y_all: torch.Tensor,
                 cfg: DiffusionTrainConfig, device: torch.device, progress: bool) -> None:
        (self.model, self.scheduler, self.x_all, self.y_all, self.cfg,
         self.progress) = model, scheduler, x_all, y_all, cfg, progress
        self.modules = {"model": model.to(device)}
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas,
                                           weight_decay=cfg.weight_decay)
        self.ema = EMAModel(model.parameters(), decay=cfg.ema_decay, use_ema_warmup=False)
        self.running, self.running_n = 0.0, 0  # loss accumulated since the last history row

    def batches(self, epoch: int):
        step, cfg = epoch - 1, self.cfg
        gen = _step_generator(cfg.seed, step)
        idx = _batch_indices(len(self.x_all), cfg.batch_size, cfg.seed, step)
        xb, yb = self.x_all[idx], self.y_all[idx]
        if cfg.augment:
            xb = random_dihedral(xb, gen, channels_last=False)
        xb, vectors = class_vector_mixup(xb, yb, self.model.config.n_classes, cfg.mixup_alpha, gen)
        yield step, xb, vectors, gen

    def training_step(self, batch) -> list[Step]:
        step, xb, vectors, gen = batch
        cfg = self.cfg

        def loss() -> torch.Tensor:
            for group in self.optimizer.param_groups:
                group["lr"] = cfg.lr * _lr_factor(step, cfg.warmup_steps)
            return diffusion_loss(self.model, self.scheduler, xb, vectors, gen, cfg.snr_gamma, self.precision)

        return [Step(loss, self.optimizer, clip=self.model.parameters)]

    def after_step(self, batch, losses: list[torch.Tensor]) -> bool:
        self.ema.step(self.model.parameters())
        self.running += float(losses[0])
        self.running_n += 1
        return False

    def end_epoch(self, epoch: int, seconds: float) -> dict[str, float]:
        if epoch % self.cfg.log_every and epoch != self.cfg.steps:
            return {}
        row = {"step": epoch, "loss": self.running / self.running_n}
        self.running, self.running_n = 0.0, 0
        if self.progress:
            print(f"step {epoch}/{self.cfg.steps} loss {row['loss']:.4f}", flush=True)
        return row

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "ema": self.ema.state_dict(),
                "running_loss": (self.running, self.running_n), "config": _resumable_fields(self.cfg)}

    def load_state_dict(self, state: dict) -> None:
        if state["config"] != _resumable_fields(self.cfg):
            raise ValueError(f"checkpoint {self.cfg.checkpoint} was written with different settings: {state['config']}")
        self.optimizer.load_state_dict(state["optimizer"])
        self.ema.load_state_dict(state["ema"])
        self.ema.to(self.device)
        self.running, self.running_n = state["running_loss"]


def _resumable_fields(cfg: DiffusionTrainConfig) -> dict:
    """The settings a checkpoint must agree with to be resumed (everything but the run-control fields)."""
    d = asdict(cfg)
    for key in ("checkpoint", "checkpoint_every", "stop_after_step", "log_every"):
        d.pop(key)
    d["betas"] = tuple(d["betas"])
    return d


@torch.no_grad()
def ddim_sample(model: ClassConditionalUNet, labels: Sequence[int] | torch.Tensor,
                scheduler: DDPMScheduler | None = None,
                steps: int = 50, seed: int = 0, batch_size: int = 64, eta: float = 0.0) -> np.ndarray:
    """Class-conditional DDIM samples, one per label, as uint8 NHWC images (seeded)."""
    scheduler = scheduler or make_scheduler()
    labels = torch.as_tensor(labels, dtype=torch.long)
    ddim = DDIMScheduler.from_config(scheduler.config, clip_sample=True, set_alpha_to_one=True)
    ddim.set_timesteps(steps)
    size = model.config.image_size
    gen = torch.Generator().manual_seed(seed)
    model.eval()
    device = model_device(model)
    out = []
    for start in range(0, len(labels), batch_size):
        lb = labels[start:start + batch_size].to(device)
        x = torch.randn((len(lb), 3, size, size), generator=gen).to(device, memory_format=torch.channels_last)
        for t in ddim.timesteps:
            eps = model(x, int(t), lb)
            x = ddim.step(eps, t, x, eta=eta, generator=gen if device.type == "cpu" else None).prev_sample
        out.append(from_model_range(x))
    return np.concatenate(out) if out else np.zeros((0, size, size, 3), np.uint8)
