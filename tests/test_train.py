"""The shared training loop: learning, determinism, resume, best-epoch selection, devices."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from wbcstudy.augment import flips_and_rot90
from wbcstudy.train import (
    Step,
    Task,
    TrainConfig,
    _class_weight_tensor,
    fit,
    predict_proba,
    select_device,
    select_precision,
)


def _blobs(n: int = 240, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Three Gaussian blobs in 2-D: a problem a linear model solves almost perfectly."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    centres = torch.tensor([[0.0, 3.0], [3.0, -2.0], [-3.0, -2.0]])
    return centres[y] + torch.randn(n, 2, generator=g), y


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))


def _config(**kw) -> TrainConfig:
    base = dict(epochs=6, batch_size=32, lr=0.05, seed=3, device="cpu", precision="fp32", channels_last=False,
                progress=False)
    base.update(kw)
    return TrainConfig(**base)


def test_fit_learns_a_separable_problem():
    result = fit(_mlp(), _blobs(), _blobs(seed=1), _config())
    assert result.history["val_accuracy"].max() > 0.95
    assert result.history["train_loss"].iloc[-1] < result.history["train_loss"].iloc[0]
    probs = predict_proba(result.model, _blobs(seed=2)[0], device="cpu", precision="fp32")
    assert probs.shape == (240, 3) and abs(probs.sum(1) - 1).max() < 1e-6


def test_same_seed_gives_identical_weights_and_other_seed_does_not():
    a = fit(_mlp(), _blobs(), None, _config()).model.state_dict()
    b = fit(_mlp(), _blobs(), None, _config()).model.state_dict()
    c = fit(_mlp(), _blobs(), None, _config(seed=4)).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_interrupted_run_resumed_equals_uninterrupted(tmp_path):
    full = fit(_mlp(), _blobs(), _blobs(seed=1), _config(), augment=None)
    ckpt = tmp_path / "run.pt"
    first = fit(_mlp(), _blobs(), _blobs(seed=1), _config(checkpoint=ckpt, stop_after_epoch=2))
    assert not first.completed and len(first.history) == 2 and ckpt.is_file()
    resumed = fit(_mlp(), _blobs(), _blobs(seed=1), _config(checkpoint=ckpt))
    assert resumed.completed and list(resumed.history["epoch"]) == list(range(1, 7))
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.best_epoch == full.best_epoch
    assert resumed.history["val_loss"].tolist() == pytest.approx(full.history["val_loss"].tolist(), abs=0)


def test_best_epoch_is_the_one_returned():
    result = fit(_mlp(), _blobs(), _blobs(seed=1), _config(monitor="val_loss"))
    best = result.history.loc[result.history["val_loss"].idxmin()]
    assert result.best_epoch == int(best["epoch"])
    with torch.no_grad():
        x, y = _blobs(seed=1)
        loss = nn.functional.cross_entropy(result.model.eval()(x), y)
    assert float(loss) == pytest.approx(best["val_loss"], rel=1e-5)


def test_patience_stops_early_but_never_at_chance():
    x_val, y_val = _blobs(seed=1)
    wrong = (x_val, (y_val + 1) % 3)  # validation labels contradict training: val loss rises as training fits
    # with the chance guard off, patience ends the run two epochs after its best
    result = fit(_mlp(), _blobs(), wrong, _config(epochs=30, patience=2, monitor="val_loss", chance_gap=-1.0))
    assert len(result.history) == result.best_epoch + 2 < 30
    # by default a run whose validation accuracy never left chance (1/3 here, it stays near 0) is not stopped
    result = fit(_mlp(), _blobs(), wrong, _config(epochs=12, patience=2, monitor="val_loss"))
    assert result.history["val_balanced_accuracy"].max() < 1 / 3 + 0.1 and len(result.history) == 12


def test_may_stop_early_by_hand():
    from wbcstudy.train import may_stop_early

    cfg = _config(min_epochs=3)
    at_chance = [{"val_balanced_accuracy": 0.30}] * 4  # 5 classes: chance 0.2, within 0.1 of it
    learning = at_chance[:3] + [{"val_balanced_accuracy": 0.45}]
    assert not may_stop_early(at_chance, cfg, 5)
    assert may_stop_early(learning, cfg, 5)
    assert not may_stop_early(learning[:2], cfg, 5)  # fewer than min_epochs
    assert may_stop_early([{"val_loss": 1.0}] * 3, cfg, 5)  # no accuracy measured: only min_epochs applies


def test_stop_at_plateau_ends_the_run_where_reached_plateau_first_holds():
    from wbcstudy.train import reached_plateau

    result = fit(_mlp(), _blobs(), _blobs(seed=1), _config(epochs=40, stop_at_plateau=True, min_epochs=5))
    accuracy = result.history["val_accuracy"].tolist()
    assert 5 <= len(accuracy) < 40  # easy blobs level off well before the cap
    assert reached_plateau(accuracy) and not any(reached_plateau(accuracy[:n]) for n in range(5, len(accuracy)))


def test_balanced_class_weights_by_hand():
    y = torch.tensor([0, 0, 0, 1])
    assert _class_weight_tensor("balanced", y, 2).tolist() == pytest.approx([4 / 6, 2.0])
    with pytest.raises(ValueError, match="every class"):
        _class_weight_tensor("balanced", y, 3)


def test_explicit_cuda_without_gpu_is_an_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        select_device("cuda")
    assert select_device("auto").type in {"cpu", "mps"}
    with pytest.raises(ValueError):
        select_precision("fp8", torch.device("cpu"))


def test_an_explicit_precision_is_kept_unless_an_entry_forces_one(monkeypatch):
    from wbcstudy.train import force_precision, precision_forced, precision_from_environment

    force_precision(None)
    assert select_precision("fp32", torch.device("cpu")) == "fp32"
    assert select_precision("bf16", torch.device("cpu")) == "bf16"
    with precision_forced("bf16"):
        assert select_precision("fp32", torch.device("cpu")) == "bf16"
        with precision_forced("auto"):  # auto keeps the force in place
            assert select_precision("fp32", torch.device("cpu")) == "bf16"
    assert select_precision("fp32", torch.device("cpu")) == "fp32"  # restored on leaving
    # the environment is read only when an entry asks, never by select_precision itself
    monkeypatch.setenv("WBCSTUDY_PRECISION", "bf16")
    assert select_precision("fp32", torch.device("cpu")) == "fp32" and precision_from_environment() == "bf16"
    monkeypatch.setenv("WBCSTUDY_PRECISION", "fp8")
    with pytest.raises(ValueError, match="WBCSTUDY_PRECISION='fp8'"):
        precision_from_environment()
    with pytest.raises(ValueError, match="precision='fp16'"):
        force_precision("fp16")


def test_flips_and_rot90_only_permutes_pixels():
    torch.manual_seed(0)
    x = torch.randint(0, 255, (64, 8, 8, 3), dtype=torch.uint8)
    y = flips_and_rot90(x)
    assert y.shape == x.shape
    assert torch.equal(y.flatten(1).sort(1).values, x.flatten(1).sort(1).values)
    assert (y != x).flatten(1).any(1).float().mean() > 0.5  # most images were transformed


def test_cross_validate_predicts_each_fold_once_with_a_fresh_model(one_thread):
    from wbcstudy.train import cross_validate

    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=(90, 2)).astype(np.float32))
    y = (x[:, 0] > 0).long().numpy()
    folds = np.arange(90) % 3
    made = []

    def make():
        made.append(nn.Linear(2, 2))
        return made[-1]

    cfg = TrainConfig(epochs=20, batch_size=16, lr=0.1, progress=False, device="cpu", precision="fp32",
                      channels_last=False)
    cv = cross_validate(make, x, y, folds, cfg, keep_models=True)
    assert len(made) == 3 and sorted(cv.models) == [0, 1, 2]
    p = cv.predictions
    assert sorted(p["row"]) == list(range(90))  # every image predicted exactly once
    assert (p["fold"].to_numpy() == folds[p["row"]]).all() and (p["y"].to_numpy() == y[p["row"]]).all()
    assert np.allclose(p[["p0", "p1"]].sum(axis=1), 1.0)
    assert (p["pred"] == p["y"]).mean() > 0.9  # a linearly separable problem
    assert cv.train_sizes == {0: 60, 1: 60, 2: 60}
    # a fold's model predicts exactly what the table says for that fold
    rows = torch.from_numpy(p[p["fold"] == 1]["row"].to_numpy().copy())
    with torch.no_grad():
        expected = cv.models[1](x[rows]).argmax(1).numpy()
    assert (expected == p[p["fold"] == 1]["pred"].to_numpy()).all()
    limited = cross_validate(lambda: nn.Linear(2, 2), x, y, folds, cfg, fold_ids=[2], train_limit=30)
    assert limited.train_sizes == {2: 30} and set(limited.predictions["fold"]) == {2}
    tested = cross_validate(lambda: nn.Linear(2, 2), x, y, folds, cfg, fold_ids=[0], test_limit=10)
    rows = tested.predictions["row"].to_numpy()
    assert len(rows) == 10 and (folds[rows] == 0).all() and len(set(rows)) == 10
    with pytest.raises(ValueError, match="no images"):
        cross_validate(lambda: nn.Linear(2, 2), x, y, folds, cfg, fold_ids=[5])


def test_wsd_schedule_by_hand():
    from wbcstudy.train import wsd_factor

    # 100 steps, 20 % cool-down: warm-up over 5 steps, constant to step 80, then linear to 0
    assert [wsd_factor(s, 100, 0.2) for s in (0, 4, 5, 50, 79, 80, 90, 99)] == pytest.approx(
        [0.2, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.05])
    with pytest.raises(ValueError, match="cooldown"):
        wsd_factor(0, 100, 1.5)


def test_budget_sensitivity_branch_leaves_the_run_alone_and_can_fail():
    cfg = dict(epochs=8, scheduler="wsd", cooldown=0.25, lr=0.05)
    plain = fit(_mlp(), _blobs(), _blobs(seed=1), _config(**cfg))
    checked = fit(_mlp(), _blobs(), _blobs(seed=1), _config(**cfg, budget_check=True))
    a, b = plain.model.state_dict(), checked.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # the half-budget branch does not disturb the run
    assert plain.budget_scores == {} and plain.reached_plateau_by_budget(0.02) is None
    assert set(checked.budget_scores) == {"half", "full"}
    assert checked.budget_scores["full"] == checked.history["val_accuracy"].iloc[-1]
    assert checked.reached_plateau_by_budget(0.02)  # easy blobs: half the budget already gets there
    slow = fit(_mlp(), _blobs(), _blobs(seed=1), _config(**{**cfg, "lr": 3e-3}, budget_check=True))
    assert slow.budget_scores["full"] - slow.budget_scores["half"] > 0.2  # still learning: doubling the budget helps
    assert slow.reached_plateau_by_budget(0.02) is False
    assert checked.plateau(0.02) and not slow.plateau(0.02)  # the one rule: by the budget test where there is one ...
    rising = plain.history.assign(val_accuracy=np.linspace(0.5, 0.9, len(plain.history)))
    flat = plain.history.assign(val_accuracy=[0.5, 0.6, 0.7, 0.8] + [0.9] * (len(plain.history) - 4))
    assert not dataclasses.replace(plain, history=rising).plateau(0.01)  # ... else by the history
    assert dataclasses.replace(plain, history=flat).plateau(0.01)
    with pytest.raises(ValueError, match="budget_check needs the 'wsd' scheduler"):
        fit(_mlp(), _blobs(), _blobs(seed=1), _config(budget_check=True))


# --------------------------------------------------------------------------- the engine (run_task)
class _LineTask(Task):
    """y = 3x + 1 by least squares, one Step per batch; records what the engine did."""

    def __init__(self, seed: int = 0, lr: float = 0.1) -> None:
        torch.manual_seed(seed)
        self.net = nn.Linear(1, 1)
        self.modules = {"net": self.net}
        self.opt = torch.optim.SGD(self.net.parameters(), lr=lr)
        self.x = torch.linspace(-1, 1, 32)[:, None]
        self.y = 3 * self.x + 1
        self.seen_autocast: list[bool] = []

    def batches(self, epoch):
        g = torch.Generator().manual_seed(epoch)
        order = torch.randperm(32, generator=g)
        for b in range(0, 32, 8):
            yield order[b:b + 8]

    def training_step(self, idx):
        def loss():
            self.seen_autocast.append(torch.is_autocast_enabled("cpu"))
            return ((self.net(self.x[idx]).float() - self.y[idx]) ** 2).mean()

        return [Step(loss, self.opt)]

    def end_epoch(self, epoch, seconds):
        with torch.no_grad():
            val = float(((self.net(self.x) - self.y) ** 2).mean())
        return {"val_loss": val, "seconds": seconds}

    def state_dict(self):
        return {"opt": self.opt.state_dict()}

    def load_state_dict(self, state):
        self.opt.load_state_dict(state["opt"])


def test_run_task_trains_keeps_the_best_epoch_and_resumes_bitwise(tmp_path):
    from wbcstudy.train import EngineConfig, run_task

    cfg = dict(epochs=6, seed=0, device="cpu", precision="fp32", monitor="val_loss")
    full = run_task(_LineTask, EngineConfig(**cfg))
    assert list(full.history.columns) == ["epoch", "val_loss", "seconds"] and full.completed
    assert full.history["val_loss"].iloc[-1] < full.history["val_loss"].iloc[0] / 10
    assert full.best_epoch == int(full.history.loc[full.history["val_loss"].idxmin(), "epoch"])
    ckpt = tmp_path / "line.pt"
    part = run_task(_LineTask, EngineConfig(**cfg, checkpoint=ckpt, stop_after_epoch=2))
    assert not part.completed and part.epochs_done == 2
    resumed = run_task(_LineTask, EngineConfig(**cfg, checkpoint=ckpt))
    assert resumed.completed and resumed.history["epoch"].tolist() == list(range(1, 7))
    assert torch.equal(resumed.task.net.weight, full.task.net.weight)
    assert resumed.history["val_loss"].tolist() == full.history["val_loss"].tolist()


def test_run_task_autocasts_the_loss_only_and_clips(monkeypatch):
    from wbcstudy.train import EngineConfig, force_precision, run_task

    force_precision(None)
    run = run_task(_LineTask, EngineConfig(epochs=1, device="cpu", precision="bf16"))
    assert run.precision == "bf16" and run.task.seen_autocast == [True] * 4
    run = run_task(_LineTask, EngineConfig(epochs=1, device="cpu", precision="fp32"))
    assert run.task.seen_autocast == [False] * 4
    # a clip of 1e-3 on a gradient of norm > 1: each SGD step (lr 0.1) moves the weights by at most 1e-4
    start = _LineTask().net.weight.detach().clone()
    run = run_task(_LineTask, EngineConfig(epochs=1, device="cpu", precision="fp32", grad_clip=1e-3))
    assert float((run.task.net.weight.detach() - start).abs().max()) <= 4 * 1e-4 + 1e-9


def test_run_task_runs_a_batchs_steps_in_order():
    """A GAN's two steps: the second loss is computed after the first optimiser step (it sees the new weights)."""
    from wbcstudy.train import EngineConfig, run_task

    class TwoSteps(Task):
        def __init__(self):
            self.a = nn.Linear(1, 1, bias=False)
            nn.init.constant_(self.a.weight, 1.0)
            self.modules = {"a": self.a}
            self.opt = torch.optim.SGD(self.a.parameters(), lr=0.5)
            self.weights_seen = []

        def batches(self, epoch):
            yield torch.ones(1, 1)

        def training_step(self, x):
            def first():
                self.weights_seen.append(float(self.a.weight.detach()))
                return self.a(x).sum()  # gradient 1: the step takes the weight from 1.0 to 0.5

            def second():
                self.weights_seen.append(float(self.a.weight.detach()))
                return -self.a(x).sum()

            return [Step(first, self.opt), Step(second, self.opt)]

    run = run_task(TwoSteps, EngineConfig(epochs=1, device="cpu", precision="fp32"))
    assert run.task.weights_seen == [1.0, 0.5] and float(run.task.a.weight.detach()) == 1.0


def test_seeded_picks_a_models_seed_runs_only():
    from wbcstudy.train import seed_key, seeded

    runs = {seed_key("cnn", 0): 1, "cnn_big_seed0": 2, seed_key("cnn", 1): 3, "cnn": 4, "cnn_seed1x": 5}
    assert seeded(runs, "cnn") == {"cnn_seed0": 1, "cnn_seed1": 3}
    assert seeded(runs, "resnet") == {}
