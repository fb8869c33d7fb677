"""DCGAN (Radford et al. 2016) at 32 or 64 px, unconditional (one GAN per class, as paper 002) or class-conditional.

Generator: a transposed-conv stack (4×4 kernels) growing a 1×1 noise vector to 4×4 and
doubling to ``image_size``, with BatchNorm and ReLU between layers and Tanh at the end.
Discriminator: strided 4×4 convolutions with LeakyReLU(0.2) and BatchNorm (none on the
first layer), ending in one logit per image. Weights start from N(0, 0.02), BatchNorm
scales from N(1, 0.02). With ``num_classes=None`` both are unconditional — train one pair
per class to follow the paper's "DCGAN per class"; with ``num_classes=C`` a learned class
embedding is concatenated to the noise and a learned per-class H×W label map is
concatenated to the image as a fourth channel.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from wbcstudy.train import Step, Task

__all__ = ["Generator", "Discriminator", "init_dcgan_weights", "train_dcgan", "generate",
           "to_tanh_range", "from_tanh_range"]

IMAGE_SIZES: tuple[int, ...] = (32, 64)


def _n_doublings(image_size: int) -> int:
    """Number of ×2 up-/down-sampling layers between 4×4 and ``image_size`` (3 at 32 px, 4 at 64 px)."""
    if image_size not in IMAGE_SIZES:
        raise ValueError(f"image_size must be one of {IMAGE_SIZES}, got {image_size}")
    return int(math.log2(image_size)) - 2


def init_dcgan_weights(module: nn.Module) -> None:
    """DCGAN initialisation: conv weights ~ N(0, 0.02); BatchNorm weights ~ N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class Generator(nn.Module):
    """DCGAN generator: noise (+ class embedding) → ConvTranspose2d–BN–ReLU blocks → Tanh image in [−1, 1]."""

    def __init__(self, nz: int = 100, num_classes: int | None = None, ngf: int = 64, image_size: int = 64,
                 embed_dim: int | None = None) -> None:
        """Layers for ``image_size`` px RGB output; ``num_classes`` adds an ``embed_dim``-wide (default num_classes)
        label embedding."""
        super().__init__()
        n_up = _n_doublings(image_size)
        self.nz, self.num_classes, self.ngf, self.image_size = nz, num_classes, ngf, image_size
        self.embedding: nn.Embedding | None = None
        in_channels = nz
        if num_classes is not None:
            embed_dim = embed_dim or num_classes
            self.embedding = nn.Embedding(num_classes, embed_dim)
            in_channels += embed_dim
        channels = ngf * 2 ** (n_up - 1)
        layers: list[nn.Module] = [nn.ConvTranspose2d(in_channels, channels, 4, 1, 0, bias=False),  # 1×1 → 4×4
                                   nn.BatchNorm2d(channels), nn.ReLU(True)]
        for _ in range(n_up - 1):
            layers += [nn.ConvTranspose2d(channels, channels // 2, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(channels // 2), nn.ReLU(True)]
            channels //= 2
        layers += [nn.ConvTranspose2d(channels, 3, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        init_dcgan_weights(self)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images (N, 3, S, S) in [−1, 1] from noise (N, nz) and, when conditional, class labels (N,)."""
        z = z.reshape(z.shape[0], self.nz, 1, 1)
        if self.embedding is not None:
            if labels is None:
                raise ValueError("a class-conditional generator needs labels")
            z = torch.cat([z, self.embedding(labels).reshape(z.shape[0], -1, 1, 1)], dim=1)
        elif labels is not None:
            raise ValueError("an unconditional generator takes no labels")
        return self.net(z)


class Discriminator(nn.Module):
    """DCGAN discriminator: strided Conv–BN–LeakyReLU(0.2) blocks → one real/fake logit per image (+ label map
    channel)."""

    def __init__(self, num_classes: int | None = None, ndf: int = 64, image_size: int = 64) -> None:
        """Layers for ``image_size`` px RGB input; ``num_classes`` adds a learned H×W label map as a fourth input
        channel."""
        super().__init__()
        n_down = _n_doublings(image_size)
        self.num_classes, self.ndf, self.image_size = num_classes, ndf, image_size
        self.label_map: nn.Embedding | None = None
        in_channels = 3
        if num_classes is not None:
            self.label_map = nn.Embedding(num_classes, image_size * image_size)
            in_channels += 1
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True)]
        channels = ndf
        for _ in range(n_down - 1):
            layers += [nn.Conv2d(channels, channels * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(channels * 2),
                       nn.LeakyReLU(0.2, inplace=True)]
            channels *= 2
        layers += [nn.Conv2d(channels, 1, 4, 1, 0, bias=False)]  # 4×4 → 1×1
        self.net = nn.Sequential(*layers)
        init_dcgan_weights(self)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Real/fake logits (N,) of images (N, 3, S, S) in [−1, 1] and, when conditional, their class labels (N,)."""
        if self.label_map is not None:
            if labels is None:
                raise ValueError("a class-conditional discriminator needs labels")
            maps = self.label_map(labels).reshape(x.shape[0], 1, self.image_size, self.image_size)
            x = torch.cat([x, maps.to(x.dtype)], dim=1)
        elif labels is not None:
            raise ValueError("an unconditional discriminator takes no labels")
        return self.net(x).reshape(x.shape[0])


def to_tanh_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC images → float32 NCHW in [−1, 1] (x / 127.5 − 1)."""
    return images.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def from_tanh_range(images: torch.Tensor) -> np.ndarray:
    """Float NCHW images in [−1, 1] → uint8 NHWC NumPy array (rounded, clipped to 0–255)."""
    pixels = ((images.detach().float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).cpu().numpy()


def _as_tensor(array: np.ndarray | torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A CPU tensor of the given dtype (no copy when it already is one)."""
    return torch.as_tensor(np.asarray(array) if not isinstance(array, torch.Tensor) else array).to(dtype)


def train_dcgan(
    generator: Generator,
    discriminator: Discriminator,
    images: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor | Sequence[int] | None = None,
    epochs: int = 1,
    batch_size: int = 64,
    lr: float = 2e-4,
    betas: tuple[float, float] = (0.5, 0.999),
    seed: int = 0,
    progress: bool = False,
    device: str = "auto",
    precision: str = "fp32",
    channels_last: bool = False,
    callback: Callable[[int], Mapping[str, float]] | None = None,
    stop: Callable[[list[dict[str, float]]], bool] | None = None,
) -> pd.DataFrame:
    """Train a DCGAN pair on uint8 NHWC images (scaled to [−1, 1]); per epoch: step (generator steps so far), d_loss,
    g_loss, d_real, d_fake, seconds, and whatever ``callback(epoch)`` returns.

    A GAN is a two-player game — each batch takes one discriminator step (real images →
    1, generated → 0) and then one generator step (generated → 1, the non-saturating
    loss), each with its own Adam optimiser: two ``Step``s of ``wbcstudy.train.run_task``, the
    loop every model trains through. Losses are binary cross-entropy on the discriminator's
    logits. ``labels`` (one class index per image) are required for conditional models, and
    generated images in a batch take the real batch's labels. ``d_real`` and ``d_fake`` are the
    mean probabilities the discriminator gave real and generated images in its step. Shuffling
    and noise come from a generator seeded with ``seed``, so on CPU the same seed and initial
    weights give the same history. Batches are dropped at the end of an epoch when incomplete
    (BatchNorm needs more than one image); the models are trained in place.

    ``precision`` ("fp32", "bf16" or "auto", as ``wbcstudy.train.select_precision``) puts the forward passes and
    losses — not the backward passes or optimiser steps — under bf16 autocast; with ``channels_last`` both models
    run in channels-last memory format (the pair is faster on CPUs with native bf16). ``callback`` is called after
    every epoch, with the models in training mode; its numbers (e.g. a quality score of generated cells, and its
    time) become columns of that epoch's row, and its seconds are not counted in ``seconds``. ``stop``, given the
    rows so far, ends training after an epoch for which it returns True (at most ``epochs`` epochs).
    """
    from wbcstudy.train import EngineConfig, run_task

    x_all = _as_tensor(images, torch.uint8)
    if x_all.ndim != 4 or x_all.shape[-1] != 3 or x_all.shape[1] != generator.image_size:
        raise ValueError(f"expected uint8 images (N, {generator.image_size}, {generator.image_size}, 3), got "
                         f"{tuple(x_all.shape)}")
    conditional = generator.num_classes is not None
    if conditional != (discriminator.num_classes is not None):
        raise ValueError("generator and discriminator must both be conditional or both unconditional")
    if conditional and labels is None:
        raise ValueError("conditional models need labels")
    y_all = _as_tensor(labels, torch.long) if conditional else None
    if y_all is not None and len(y_all) != len(x_all):
        raise ValueError(f"{len(x_all)} images but {len(y_all)} labels")
    if len(x_all) < 2:
        raise ValueError("need at least two images")
    task = _DCGANTask(generator, discriminator, x_all, y_all, batch_size, lr, betas, seed, channels_last, callback)
    cfg = EngineConfig(epochs=epochs, seed=None, deterministic=None, device=device, precision=precision, stop=stop,
                       progress=progress)
    return run_task(lambda: task, cfg).history


class _DCGANTask(Task):
    """The DCGAN's part of ``run_task``: shuffled batches, and per batch the discriminator's step, then the
    generator's."""

    epoch_column = True

    def __init__(self, generator: Generator, discriminator: Discriminator, x_all: torch.Tensor,
                 y_all: torch.Tensor | None,
                 batch_size: int, lr: float, betas: tuple[float, float], seed: int, channels_last: bool,
                 callback: Callable[[int], Mapping[str, float]] | None) -> None:
        self.generator, self.discriminator, self.x_all, self.y_all = generator, discriminator, x_all, y_all
        self.modules = {"generator": generator, "discriminator": discriminator}
        self.fmt = torch.channels_last if channels_last else torch.contiguous_format
        for module in self.modules.values():
            module.to(memory_format=self.fmt)
        self.rng = torch.Generator().manual_seed(seed)
        self.opt_g = torch.optim.Adam(generator.parameters(), lr=lr, betas=betas)
        self.opt_d = torch.optim.Adam(discriminator.parameters(), lr=lr, betas=betas)
        self.batch_size = min(batch_size, len(x_all))
        self.n_batches = len(x_all) // self.batch_size  # drop the incomplete last batch
        self.callback = callback

    def batches(self, epoch: int):
        order = torch.randperm(len(self.x_all), generator=self.rng)
        self.sums = {"d_loss": 0.0, "g_loss": 0.0, "d_real": 0.0, "d_fake": 0.0}
        for b in range(self.n_batches):
            yield order[b * self.batch_size:(b + 1) * self.batch_size]

    def training_step(self, idx: torch.Tensor) -> list[Step]:
        dev = self.device
        real = to_tanh_range(self.x_all[idx]).to(dev).contiguous(memory_format=self.fmt)
        y = self.y_all[idx].to(dev) if self.y_all is not None else None
        z = torch.randn(len(idx), self.generator.nz, generator=self.rng).to(dev)
        state: dict[str, torch.Tensor] = {}

        def discriminator_loss() -> torch.Tensor:
            state["fake"] = self.generator(z, y)
            state["real_logits"] = self.discriminator(real, y).float()
            state["fake_logits"] = self.discriminator(state["fake"].detach(), y).float()
            return (F.binary_cross_entropy_with_logits(state["real_logits"], torch.ones_like(state["real_logits"]))
                    + F.binary_cross_entropy_with_logits(state["fake_logits"], torch.zeros_like(state["fake_logits"])))

        def generator_loss() -> torch.Tensor:
            g_logits = self.discriminator(state["fake"], y).float()
            return F.binary_cross_entropy_with_logits(g_logits, torch.ones_like(g_logits))

        self.state = state
        return [Step(discriminator_loss, self.opt_d), Step(generator_loss, self.opt_g)]

    def after_step(self, idx: torch.Tensor, losses: list[torch.Tensor]) -> bool:
        d_loss, g_loss = losses
        self.sums["d_loss"] += float(d_loss)
        self.sums["g_loss"] += float(g_loss)
        self.sums["d_real"] += float(torch.sigmoid(self.state["real_logits"].detach()).mean())
        self.sums["d_fake"] += float(torch.sigmoid(self.state["fake_logits"].detach()).mean())
        return False

    def end_epoch(self, epoch: int, seconds: float) -> dict[str, float]:
        row: dict[str, float] = {"step": epoch * self.n_batches,
                                 **{k: v / self.n_batches for k, v in self.sums.items()}, "seconds": seconds}
        if self.callback is not None:
            row.update(self.callback(epoch))
            self.generator.train()
            self.discriminator.train()
        return row


@torch.inference_mode()
def generate(
    generator: Generator,
    n: int,
    labels: int | Sequence[int] | np.ndarray | torch.Tensor | None = None,
    seed: int = 0,
    batch_size: int = 256,
) -> np.ndarray:
    """``n`` generated images as a uint8 NHWC array (0–255), from seeded noise; ``labels`` is one class or one per
    image.

    The generator runs in eval mode (BatchNorm with its running statistics) and is put
    back in its previous mode afterwards.
    """
    conditional = generator.num_classes is not None
    if conditional and labels is None:
        raise ValueError("a class-conditional generator needs labels")
    y_all: torch.Tensor | None = None
    if labels is not None:
        y_all = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        y_all = y_all.expand(n).clone() if y_all.ndim == 0 else y_all
        if len(y_all) != n:
            raise ValueError(f"{n} images asked for but {len(y_all)} labels given")
    dev = next(generator.parameters()).device
    rng = torch.Generator().manual_seed(seed)
    was_training = generator.training
    generator.eval()
    out = []
    try:
        for i in range(0, n, batch_size):
            m = min(batch_size, n - i)
            z = torch.randn(m, generator.nz, generator=rng).to(dev)
            y = y_all[i:i + m].to(dev) if y_all is not None else None
            out.append(from_tanh_range(generator(z, y)))
    finally:
        generator.train(was_training)
    if not out:
        return np.zeros((0, generator.image_size, generator.image_size, 3), dtype=np.uint8)
    return np.concatenate(out)
