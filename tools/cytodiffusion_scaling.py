"""What a longer training budget buys the CytoDiffusion chapter's diffusion classifier (a GPU side experiment).

The chapter's cpu profile trains its 8-class model for 500 steps. This script trains the *same* model (same UNet,
recipe, seed and 32-px PBC training images) for many more steps on a GPU and classifies the same stratified in-domain
test cells after each of several step counts, so the chapter can show whether its weak in-domain accuracy is a
matter of training budget. It is not part of ``make book``: it needs a GPU.

    python tools/cytodiffusion_scaling.py export DIR       # here: PBC 32-px arrays as the chapter builds them → DIR/pbc32.npz
    python tools/cytodiffusion_scaling.py run DIR OUT.json # on a GPU: train, classify, write the results after every step count

``book/results/cytodiffusion_scaling.json`` is the output of one such run on an NVIDIA H100 (about 18 training steps/s:
this small UNet leaves the GPU mostly idle), shown in the chapter as a recorded measurement.
    python tools/cytodiffusion_scaling.py run DIR OUT.json 2,3 4   # a quick check: 2 then 3 steps, 4 test cells

The export needs the datasets (``WBCSTUDY_DATA``); the run needs only ``torch``, ``diffusers`` and the two package
modules it imports, so it can run where the rest of the package's dependencies are not installed.
"""
from __future__ import annotations

import importlib
import json
import sys
import time
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from wbcstudy.run import parameters_cell  # noqa: E402  (needs only yaml: it runs on the GPU machine too)

CPU = parameters_cell("cytodiffusion")  # the chapter's cpu defaults: model, recipe, seed and test subset size
STEP_COUNTS = (500, 2000, 6000)  # a fourth segment to 16,000 steps did not fit the 15 min of GPU time a session has
MAX_TRIALS = 100
REPORT_TRIALS = (40, 100)  # the chapter's max_trials, and more


def _diffusion_modules():
    """wbcstudy.models.diffusion and wbcstudy.diffusion_classifier, without the models package's other imports."""
    if "wbcstudy.models" not in sys.modules:
        pkg = types.ModuleType("wbcstudy.models")
        pkg.__path__ = [str(ROOT / "wbcstudy" / "models")]
        sys.modules["wbcstudy.models"] = pkg
    return importlib.import_module("wbcstudy.models.diffusion"), importlib.import_module("wbcstudy.diffusion_classifier")


def export(out_dir: Path) -> Path:
    """The chapter's 32-px PBC arrays: all training images, and the stratified in-domain test subset it classifies."""
    import torch
    import torch.nn.functional as F
    from wbcstudy.data import load_split_arrays, stratified_subset

    def pooled(x: np.ndarray) -> np.ndarray:
        t = F.adaptive_avg_pool2d(torch.from_numpy(x).permute(0, 3, 1, 2).float(), CPU["image_size"])
        return t.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()

    train_x, train_y, classes = load_split_arrays("pbc8", "train", 64)
    test_x, test_y, _ = load_split_arrays("pbc8", "test", 64)
    rows = stratified_subset(test_y, CPU["indomain_test_limit"], CPU["seed"])
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "pbc32.npz"
    np.savez_compressed(path, train_x=pooled(train_x), train_y=train_y, test_x=pooled(test_x[rows]), test_y=test_y[rows],
                        classes=np.array(classes))
    return path


def run(data_dir: Path, out_json: Path, step_counts: tuple[int, ...] = STEP_COUNTS, test_cells: int = 0) -> dict:
    """Train on a GPU up to each step count in turn (resuming from the checkpoint) and classify the test cells."""
    import torch
    from sklearn.metrics import balanced_accuracy_score

    diffusion, dc = _diffusion_modules()
    path = data_dir / "pbc32.npz"
    if not path.is_file() and path.with_suffix(".npz.xz").is_file():  # the export, xz-compressed to travel (25 MB)
        import io
        import lzma
        path = io.BytesIO(lzma.decompress(path.with_suffix(".npz.xz").read_bytes()))
    data = dict(np.load(path))
    if test_cells:  # a quick check of the script itself
        data["test_x"], data["test_y"] = data["test_x"][:test_cells], data["test_y"][:test_cells]
    classes = [str(c) for c in data["classes"]]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    scheduler = diffusion.make_scheduler()
    ckpt = out_json.parent / "scaling_checkpoint.pt"
    ckpt.unlink(missing_ok=True)
    record = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu", "torch": torch.__version__,
              "test_cells": int(len(data["test_y"])), "train_cells": int(len(data["train_y"])), "max_trials": MAX_TRIALS,
              "weighting": "uniform", "pruning": False, "unet_channels": CPU["unet_channels"], "rows": []}
    for steps in step_counts:
        torch.manual_seed(CPU["seed"])
        model = diffusion.ClassConditionalUNet(diffusion.UNetConfig(
            image_size=CPU["image_size"], n_classes=len(classes), block_out_channels=tuple(CPU["unet_channels"])))
        cfg = diffusion.DiffusionTrainConfig(steps=step_counts[-1], batch_size=CPU["batch_size"], lr=CPU["diffusion_lr"],
                                             warmup_steps=CPU["warmup_steps"], ema_decay=CPU["ema_decay"],
                                             seed=CPU["seed"], checkpoint=ckpt, checkpoint_every=step_counts[-1],
                                             stop_after_step=steps, log_every=max(1, steps // 20))
        start = time.perf_counter()
        trained = diffusion.train_diffusion(model, data["train_x"], data["train_y"], cfg, scheduler, device=device)
        train_seconds = time.perf_counter() - start
        start = time.perf_counter()
        res = dc.diffusion_classify(trained.ema_model, data["test_x"], scheduler, len(classes), max_trials=MAX_TRIALS,
                                    prune=False, weighting="uniform", keep_errors=True, images_per_call=32, seed=CPU["seed"])
        per_trial = dc.predictions_after_each_trial(res.raw_errors, np.ones(MAX_TRIALS))
        row = {"steps": trained.steps_done, "train_seconds_this_segment": round(train_seconds, 1),
               "classify_seconds": round(time.perf_counter() - start, 1),
               "final_loss": float(trained.history.loss.iloc[-1])}
        for k in REPORT_TRIALS:
            row[f"accuracy_{k}_trials"] = float((per_trial[:, k - 1] == data["test_y"]).mean())
            row[f"balanced_accuracy_{k}_trials"] = float(balanced_accuracy_score(data["test_y"], per_trial[:, k - 1]))
        record["rows"].append(row)
        out_json.write_text(json.dumps(record, indent=2) + "\n")  # after every step count: a timeout keeps what was done
        print(row, flush=True)
    ckpt.unlink(missing_ok=True)
    return record


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "export":
        print(export(Path(sys.argv[2])))
    elif len(sys.argv) >= 4 and sys.argv[1] == "run":
        steps = tuple(int(s) for s in sys.argv[4].split(",")) if len(sys.argv) > 4 else STEP_COUNTS
        run(Path(sys.argv[2]), Path(sys.argv[3]), steps, int(sys.argv[5]) if len(sys.argv) > 5 else 0)
    else:
        sys.exit(__doc__)
