"""Stages called directly on a tiny config: reproducible metrics, the pretrained switch honoured, the
best epoch kept, progress logged, and a killed stage resumed."""

import json
import logging
import re
import shutil
import signal
import subprocess
import time
from dataclasses import replace

import lightning as L
import pytest
import torch

from pipeline.config import ConfigError, load_config
from pipeline.data.dataset import load_split
from pipeline.models.pretrained import PretrainedWeightsMissing
from pipeline.registry.tracking import tracked_run
from pipeline.models.checkpoint import load_checkpoint
from pipeline.stages import generate, train_inpainter, train_segmenter
from pipeline.stages.common import Paths
from pipeline.stages.training import fit, log_training_outputs, training_fingerprint
from tests.conftest import BIN, deocclude, make_project, project_env, tiny_params, write_params


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("stage")
    cfg = load_config(write_params(root, tiny_params({"segmenter": {"epochs": 2}})),
                      env={"MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"})
    generate.run(cfg)
    return root


def config_in(root, tmp_path, overrides=None):
    shutil.copytree(Paths(root).dataset, Paths(tmp_path).dataset)
    return load_config(write_params(tmp_path, tiny_params({"segmenter": {"epochs": 2}, **(overrides or {})})),
                       env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"})


def test_same_params_and_data_give_the_same_metrics(dataset_root, tmp_path):
    metrics = []
    for attempt in ("first", "second"):
        cfg = config_in(dataset_root, tmp_path / attempt)
        train_segmenter.run(cfg)
        metrics.append(json.loads((Paths(cfg.root).training_reports / "segmenter_metrics.json").read_text()))
    assert metrics[0] == metrics[1]


def test_pretrained_request_without_weights_fails_naming_the_file(dataset_root, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cfg = config_in(dataset_root, tmp_path, {"segmenter": {"arch": "soclnet", "arch_kwargs": {}, "pretrained": True,
                                                           "epochs": 1}})
    with pytest.raises(PretrainedWeightsMissing, match=str(tmp_path / "torch" / "hub" / "checkpoints" / "resnet50")):
        train_segmenter.run(cfg)
    assert not Paths(cfg.root).segmenter.exists()


def test_pretrained_is_refused_for_an_architecture_without_weights(dataset_root, tmp_path):
    cfg = config_in(dataset_root, tmp_path, {"segmenter": {"arch": "sa-unet", "arch_kwargs": {"width": 4, "max_channels": 16},
                                                           "pretrained": True}})
    with pytest.raises(ConfigError, match="'sa-unet' has no pretrained weights"):
        train_segmenter.run(cfg)


def test_the_inpainter_stage_fits_the_eigenface_prior_to_the_training_faces_and_saves_it(dataset_root, tmp_path):
    cfg = config_in(dataset_root, tmp_path, {"inpainter": {
        "arch": "mmrm-unet", "arch_kwargs": {"width": 4, "depth": 3, "hole_fill": "eigenface", "prior_components": 16},
        "discriminator": None, "perceptual_fallback": "none", "loss_weights": {"l1": 1.0, "hole_l1": 4.0}, "epochs": 1}})
    train_inpainter.run(cfg)
    net, _ = load_checkpoint(Paths(cfg.root).inpainter)
    train = load_split(Paths(cfg.root).dataset, "train")
    faces = train.select(0, len(train)).clean_image
    assert net.face_prior.basis.shape == (16, 3 * 32 * 32)
    assert torch.allclose(net.face_prior.mean, (faces.mean(0) + faces.flip(-1).mean(0)) / 2, atol=1e-5)
    image, mask = faces[:2], torch.zeros(2, 1, 32, 32)
    mask[..., 8:20, 8:24] = 1
    with torch.no_grad():
        restored = net(image, mask)
    assert restored.shape == image.shape and torch.isfinite(restored).all()


class ScriptedScore(L.LightningModule):
    """A one-weight module whose validation score per epoch is given: which epoch is best is known."""

    monitor, monitor_mode = "val/score", "max"

    def __init__(self, scores: list[float]) -> None:
        super().__init__()
        self.scores = scores
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.register_buffer("epochs_trained", torch.zeros(()))

    def training_step(self, batch, batch_idx):
        loss = (self.weight - batch["occluded_image"].mean()).pow(2).sum()
        self.log("train/loss", loss, on_epoch=True, on_step=False)
        return loss

    def on_train_epoch_end(self) -> None:
        self.epochs_trained.fill_(self.current_epoch + 1)

    def validation_step(self, batch, batch_idx) -> None:
        self.log("val/score", self.scores[self.current_epoch])
        self.log("val/loss", 1.0 - self.scores[self.current_epoch])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_fit_keeps_the_best_epoch_logs_one_line_per_epoch_and_honours_the_trainer_section(dataset_root, tmp_path, caplog):
    cfg = config_in(dataset_root, tmp_path, {"segmenter": {"epochs": 3, "trainer": {"precision": "bf16-mixed"}}})
    paths = Paths(cfg.root)
    module = ScriptedScore([0.2, 0.9, 0.5])
    caplog.set_level(logging.INFO, logger="pipeline")
    with tracked_run(cfg.registry, "fit-test", {}, {}) as run:
        history = fit(module, "train_segmenter", cfg.segmenter, load_split(paths.dataset, "train"),
                      load_split(paths.dataset, "val"), 32, cfg.seed, cfg.registry, run.info.run_id, paths.models)
        assert history.resume_dir.parent == paths.models / ".resume" and (history.resume_dir / "best.ckpt").is_file()
        final = log_training_outputs([], history, paths.training_reports / "history.csv", [torch.rand(2, 3, 8, 8)],
                                     paths.training_reports / "grid.png")
    assert history.best_epoch == 1 and int(module.epochs_trained) == 2      # the weights of epoch 2 of 3, not the last
    assert final == pytest.approx({"val_score": 0.9, "val_loss": 0.1, "best_epoch": 1.0})
    assert len(history.rows) == 3 and len((paths.training_reports / "history.csv").read_text().splitlines()) == 4
    assert not (paths.models / ".resume").exists()                           # dropped once the outputs are written
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("train_segmenter epoch ")]
    assert len(lines) == 3 and len(set(lines)) == 3
    assert re.fullmatch(r"train_segmenter epoch 2/3  train_loss \S+  val_loss 0\.1  val_score 0\.9  [\d.]+ s/epoch  ETA \d+ s",
                        lines[1]), lines[1]
    assert module.trainer.precision == "bf16-mixed"
    assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()


class ScriptedStart(ScriptedScore):
    """ScriptedScore whose starting weights (its weight still 0) score `start`."""

    def __init__(self, start: float, scores: list[float]) -> None:
        super().__init__(scores)
        self.start = start

    def validation_step(self, batch, batch_idx) -> None:
        score = self.start if float(self.weight.detach()) == 0.0 else self.scores[self.current_epoch]
        self.log("val/score", score)
        self.log("val/loss", 1.0 - score)


@pytest.mark.parametrize("start, kept_epoch", [(0.95, -1), (0.9, -1), (0.5, 1)])
def test_fit_keeps_the_starting_weights_when_no_epoch_beats_them(dataset_root, tmp_path, start, kept_epoch):
    cfg = config_in(dataset_root, tmp_path, {"segmenter": {"epochs": 2}})
    paths = Paths(cfg.root)
    module = ScriptedStart(start, [0.2, 0.9])
    with tracked_run(cfg.registry, "fit-test", {}, {}) as run:
        history = fit(module, "finetune", cfg.segmenter, load_split(paths.dataset, "train"), load_split(paths.dataset, "val"),
                      32, cfg.seed, cfg.registry, run.info.run_id, paths.models, keep_start_unless_beaten=True)
        final = log_training_outputs([], history, paths.training_reports / "history.csv", [torch.rand(2, 3, 8, 8)],
                                     paths.training_reports / "grid.png")
    assert history.best_epoch == kept_epoch
    if kept_epoch < 0:
        assert int(module.epochs_trained) == 0 and float(module.weight.detach()) == 0.0      # the starting weights, restored
    else:
        assert int(module.epochs_trained) == 2 and float(module.weight.detach()) != 0.0
    best = max(start, 0.9) if kept_epoch < 0 else 0.9
    assert final == pytest.approx({"val_score": best, "val_loss": 1 - best, "best_epoch": float(kept_epoch),
                                   "start_val_score": start})
    assert len((paths.training_reports / "history.csv").read_text().splitlines()) == 3   # the epochs' rows only
    # The start's validation runs on a trainer of its own: the run's history holds the two epochs only.
    from mlflow.tracking import MlflowClient
    assert len(MlflowClient(cfg.registry.tracking_uri).get_metric_history(run.info.run_id, "val/score")) == 2


@pytest.mark.parametrize("cache_mb, held", [(0, False), (1, True)])
def test_fit_holds_the_splits_in_memory_as_trainer_cache_mb_says(dataset_root, tmp_path, cache_mb, held):
    cfg = config_in(dataset_root, tmp_path, {"segmenter": {"epochs": 1, "trainer": {"cache_mb": cache_mb}}})
    paths = Paths(cfg.root)
    train, val = load_split(paths.dataset, "train"), load_split(paths.dataset, "val")
    module = ScriptedScore([0.5])
    with tracked_run(cfg.registry, "fit-test", {}, {}) as run:
        fit(module, "train_segmenter", cfg.segmenter, train, val, 32, cfg.seed, cfg.registry, run.info.run_id, paths.models)
    data = module.trainer.datamodule
    assert (data.train.pixels is not None) is held and (data.val.pixels is not None) is held


@pytest.mark.parametrize("batches_per_epoch, steps", [(None, 2 * 6), (2, 2 * 2)])
def test_fit_trains_batches_per_epoch_batches_of_each_epoch(dataset_root, tmp_path, batches_per_epoch, steps):
    cfg = config_in(dataset_root, tmp_path, {"segmenter": {"epochs": 2, "batch_size": 7, "batches_per_epoch": batches_per_epoch}})
    paths = Paths(cfg.root)
    train = load_split(paths.dataset, "train")
    assert -(-len(train) // 7) == 6                      # the tiny train split: 42 samples, 6 batches of 7
    module = ScriptedScore([0.5, 0.6])
    with tracked_run(cfg.registry, "fit-test", {}, {}) as run:
        fit(module, "train_segmenter", cfg.segmenter, train, load_split(paths.dataset, "val"), 32, cfg.seed,
            cfg.registry, run.info.run_id, paths.models)
    assert module.trainer.global_step == steps


class StopAfterFirstEpoch(L.Callback):
    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 1:                     # epoch 1's last.ckpt is written by then
            raise RuntimeError("killed")


def test_a_resumed_run_keeps_the_precision_its_first_part_chose(dataset_root, tmp_path):
    from pipeline.training.precision import resolve_precision

    cfg = config_in(dataset_root, tmp_path, {"segmenter": {"epochs": 2, "trainer": {"precision": "auto"}}})
    paths = Paths(cfg.root)
    train, val = load_split(paths.dataset, "train"), load_split(paths.dataset, "val")
    with tracked_run(cfg.registry, "fit-test", {}, {}) as run:
        with pytest.raises(RuntimeError, match="killed"):
            fit(ScriptedScore([0.2, 0.9]), "train_segmenter", cfg.segmenter, train, val, 32, cfg.seed, cfg.registry,
                run.info.run_id, paths.models, callbacks=[StopAfterFirstEpoch()])
        (resume_dir,) = (paths.models / ".resume").iterdir()
        assert (resume_dir / "last.ckpt").is_file()
        assert (resume_dir / "precision").read_text() == resolve_precision("auto", "cpu")
        other = "32" if resolve_precision("auto", "cpu") == "bf16-mixed" else "bf16-mixed"
        (resume_dir / "precision").write_text(other)            # as if the first part had timed the other way
        module = ScriptedScore([0.2, 0.9])
        fit(module, "train_segmenter", cfg.segmenter, train, val, 32, cfg.seed, cfg.registry, run.info.run_id, paths.models)
    assert module.trainer.precision in (other, f"{other}-true")            # Lightning spells 32 as 32-true


def test_the_resume_key_changes_with_what_is_learned_not_with_the_loader(dataset_root, tmp_path):
    cfg = config_in(dataset_root, tmp_path)
    key = lambda section, **kw: training_fingerprint("train_segmenter", section, kw.get("resolution", 32), cfg.seed,  # noqa: E731
                                                     Paths(cfg.root).dataset, {}, ())
    base = key(cfg.segmenter)
    assert key(replace(cfg.segmenter, trainer=replace(cfg.segmenter.trainer, num_workers=4, pin_memory=True, cache_mb=0))) == base
    assert key(replace(cfg.segmenter, optimizer=replace(cfg.segmenter.optimizer, lr=0.5))) != base
    assert key(replace(cfg.segmenter, trainer=replace(cfg.segmenter.trainer, precision="bf16-mixed"))) != base
    assert key(cfg.segmenter, resolution=64) != base


def test_a_killed_training_stage_leaves_no_output_and_the_rerun_resumes(tmp_path):
    root = make_project(tmp_path / "project", {"segmenter": {"arch": "unet-small", "arch_kwargs": {"width": 4, "depth": 2},
                                                            "epochs": 6}})
    # One thread: on a shared 2-core machine torch's two spinning threads make tiny epochs 20x slower.
    env, paths = project_env(root, OMP_NUM_THREADS="1"), Paths(root)
    subprocess.run([str(BIN / "dvc"), "repro", "generate"], cwd=root, env=env, check=True, capture_output=True)
    with open(tmp_path / "killed.log", "w") as log:
        stage = subprocess.Popen([str(BIN / "deocclude"), "--params", str(root / "params.yaml"), "train-segmenter"],
                                 cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while not list(paths.models.glob(".resume/train_segmenter-*/last.ckpt")):
            assert stage.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.02)
        stage.send_signal(signal.SIGKILL)
        stage.wait()
    outputs = [paths.segmenter, *(paths.training_reports / f"segmenter_{name}" for name in
                                  ("metrics.json", "history.csv", "samples.png"))]
    assert not [path for path in outputs if path.exists()]
    [last] = paths.models.glob(".resume/train_segmenter-*/last.ckpt")
    done = torch.load(last, map_location="cpu", weights_only=False)["epoch"] + 1
    assert done < 6

    result = deocclude(root, "train-segmenter", env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert f"resuming from {last}" in output
    epochs = re.findall(r"^train_segmenter epoch (\d+)/6  train_loss \S+  val_loss \S+  val_iou \S+  [\d.]+ s/epoch  ETA .+$",
                        output, re.MULTILINE)
    assert [int(epoch) for epoch in epochs] == list(range(done + 1, 7))      # only the epochs left, each once
    assert all(path.is_file() for path in outputs)
    assert len((paths.training_reports / "segmenter_history.csv").read_text().splitlines()) == 7  # header + 6
    assert not (paths.models / ".resume").exists()
    assert not [noise for noise in ("💡", "GPU available", "Traceback", "Warning", "warn(") if noise in output], output


@pytest.mark.parametrize("flip", [True, False])
def test_the_segmenters_checkpoint_carries_test_time_flip_from_params(dataset_root, tmp_path, flip):
    cfg = config_in(dataset_root, tmp_path, {"segmenter": {"epochs": 1, "test_time_flip": flip}})
    train_segmenter.run(cfg)
    _, settings = load_checkpoint(Paths(cfg.root).segmenter)
    assert settings.test_time_flip is flip
