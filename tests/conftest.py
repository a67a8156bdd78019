"""Tiny CPU configs and throwaway DVC projects: tests shrink the config instead of mocking."""

from __future__ import annotations

import atexit
import copy
import os
import tempfile
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

import pipeline  # noqa: F401  (its torchvision shim must load before lightning imports torchvision)
from pipeline.config import merge_overrides

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# Prefect's ephemeral server gets 20 s to answer by default; on two cores busy with the rest of
# the suite it can need more, and the flows under test would fail for the machine's load alone.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
# With usage analytics on, every dvc command starts a daemon (about a second of CPU) that reaches for the
# internet. The repo's .dvc/config turns them off; the projects the tests `dvc init` get it from here.
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
# `precision: auto` remembers its choices per machine; the suite's stay out of the user's ~/.cache.
if "DEOCCLUDE_PRECISION_CACHE" not in os.environ:
    _precision_dir = tempfile.mkdtemp(prefix="deocclude-precision-")
    atexit.register(shutil.rmtree, _precision_dir, ignore_errors=True)
    os.environ["DEOCCLUDE_PRECISION_CACHE"] = str(Path(_precision_dir) / "precision.json")

# Small enough to train in seconds, large enough that the segmenter finds occluders.
TINY_OVERRIDES: dict[str, Any] = {
    "data": {"count": 60, "resolution": 32},
    # SOCLNET, not the quick profile's SA-UNet: at 32 px it still has 4x4 maps (SA-UNet needs 64 px),
    # and its three classes exercise the face / background scores. fp32: bit-stable expectations.
    "segmenter": {"arch": "soclnet",
                  "arch_kwargs": {"backbone_layers": [1, 1, 1, 1], "width_per_group": 8, "aspp_channels": 16,
                                  "atrous_rates": [1, 2, 3], "output_stride": 8},
                  "epochs": 6, "batch_size": 8, "optimizer": {"lr": 0.003, "schedule": "constant"}, "hflip": False,
                  "trainer": {"precision": "32"}},
    # IFACENET with paper 000's four loss terms (the quick profile trains a pixel-loss MMRM U-Net).
    "inpainter": {"arch": "ifacenet", "arch_kwargs": {"tra_channels": 16, "shallow_channels": 16, "shallow_width": 8, "context_channels": 16,
                                  "decoder_channels": 32, "resnet_layers": [1, 1, 1, 1], "resnet_width_per_group": 8},
                  "perceptual_fallback": "random", "perceptual_layers": ["relu1_1", "relu2_1"],
                  "discriminator": {"arch": "patchgan", "arch_kwargs": {"width": 8}},
                  "loss_weights": {"l1": 1.7, "hole_l1": 4.0, "perceptual": 0.5, "style": 0.5, "adversarial": 0.05},
                  "epochs": 4, "batch_size": 8, "optimizer": {"lr": 0.003, "schedule": "constant"}, "hflip": False,
                  "trainer": {"precision": "32"}},
    "finetune": {"epochs": 1, "batch_size": 8, "hflip": False, "trainer": {"precision": "32"}},
    "evaluation": {"grid_samples": 3},
    # Models trained for seconds do not beat the baselines, and the pipeline tests need a champion to
    # serve: no floors here. tests/registry tests the floors with the default gate spelled out.
    "promotion": {"floor_baselines": [], "photograph_min_iou": None, "photograph_baselines": [],
                  "photograph_metrics": []},
}

# Per-architecture arguments small enough for a CPU test, for every registered name.
TINY_ARCH_KWARGS: dict[str, dict[str, Any]] = {
    "unet-small": {"width": 4, "depth": 2},
    "unet-inpainter": {"width": 4, "depth": 2},
    "soclnet": TINY_OVERRIDES["segmenter"]["arch_kwargs"],
    "sa-unet": {"width": 4, "max_channels": 16},
    "ifacenet": TINY_OVERRIDES["inpainter"]["arch_kwargs"],
    "patchgan": {"width": 8},
    "mmrm-unet": {"width": 4, "depth": 3},
    "sn-patchgan": {"width": 8},
    "isnet": {"width": 4, "blocks": 1, "phases": 2},
    "isnet-patchgan": {"width": 8},
}


MLFLOW_URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@pytest.fixture(autouse=True)
def mlflow_store_reset_after_each_test():
    """mlflow.set_tracking_uri / set_registry_uri, which stages call in-process, keep the store in a
    module global and write it into os.environ: both go back after each test, so no later test in the
    same worker finds an earlier test's store."""
    saved = {name: os.environ.get(name) for name in MLFLOW_URI_VARIABLES}
    yield
    if "mlflow" in sys.modules:
        import mlflow

        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def tiny_arch_kwargs(name: str) -> dict[str, Any]:
    return TINY_ARCH_KWARGS.get(name) or TINY_ARCH_KWARGS[name.split("-no-")[0]]


def tiny_params(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    base = yaml.safe_load((REPO / "params.yaml").read_text())
    return copy.deepcopy(merge_overrides(merge_overrides(base, TINY_OVERRIDES), overrides or {}))


def write_params(root: Path, params: dict[str, Any]) -> Path:
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def project_env(root: Path, **extra: str) -> dict[str, str]:
    """The environment a user's shell would give: no tracking server, and Python writing bytecode
    (next to the code DVC hashes) as it does by default. No MLFLOW_*_URI either: mlflow's
    set_tracking_uri / set_registry_uri, which stages call in-process, write them into os.environ."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "PREFECT_API_URL", "PYTHONDONTWRITEBYTECODE",
                        "DEOCCLUDE_PARENT_RUN_ID")}
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", GX_ANALYTICS_ENABLED="false",
               PREFECT_HOME=str(root / ".prefect"), MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false")
    env.update(extra)
    return env


def make_project(root: Path, overrides: dict[str, Any] | None = None) -> Path:
    """A git + DVC project with this repo's dvc.yaml, code tree and a tiny params.yaml."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    shutil.copytree(REPO / "pipeline", root / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "bin", root / "bin")
    shutil.copytree(REPO / "data" / "raw", root / "data" / "raw")
    write_params(root, tiny_params(overrides))
    (root / ".gitignore").write_text((REPO / ".gitignore").read_text())
    run = lambda *cmd: subprocess.run(cmd, cwd=root, check=True, capture_output=True, text=True)  # noqa: E731
    run("git", "init", "-q")
    run("git", "config", "user.email", "tests@deocclude.invalid")
    run("git", "config", "user.name", "deocclude tests")
    run(str(BIN / "dvc"), "init", "-q")
    shutil.copy(REPO / ".dvcignore", root / ".dvcignore")
    run("git", "add", "-A")
    run("git", "commit", "-q", "-m", "tiny project")
    return root


def deocclude(root: Path, *args: str, env: dict[str, str] | None = None, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "deocclude"), "--params", str(root / "params.yaml"), *args], cwd=root,
                          env=env or project_env(root), capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def tiny_config(tmp_path: Path):
    from pipeline.config import load_config

    return load_config(write_params(tmp_path, tiny_params()))


# Each of these modules runs a whole tiny pipeline or starts servers (minutes, mostly one core busy):
# collected first, so that `make test`'s two xdist workers (whole modules each, --dist loadfile, in
# collection order with --no-loadscope-reorder) start them early and the short tests fill the other
# worker, instead of one worker ending alone.
SLOW_MODULES_FIRST = ("tests/test_pipeline.py", "tests/infra/test_servers.py", "tests/flows/test_deployments.py",
                      "tests/registry/test_register.py", "tests/stages/test_hpo.py", "tests/storage/test_remote.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    order = {REPO / module: rank for rank, module in enumerate(SLOW_MODULES_FIRST)}
    # stable: the order within a module and among the rest is kept
    items.sort(key=lambda item: order.get(Path(item.path).resolve(), len(order)))
