"""dvc.yaml's code deps cover every module a stage loads, so editing any of them reruns the stage."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.stages import STAGES
from pipeline.stages.code_deps import sync_dvc_yaml
from tests.conftest import REPO

LOADED_MODULES = """
import importlib, json, sys
import pipeline.cli
importlib.import_module("pipeline.stages." + sys.argv[1])
print(json.dumps(sorted({m.__file__ for m in list(sys.modules.values()) if getattr(m, "__file__", None)})))
"""


def covered(path: str, deps: list[str]) -> bool:
    return any(path == dep or path.startswith(dep.rstrip("/") + "/") for dep in deps)


def test_dvc_yaml_lists_the_stages_and_their_code():
    assert sync_dvc_yaml(REPO, write=False) == []
    assert list(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]) == list(STAGES)


@pytest.mark.parametrize("stage", STAGES)
def test_every_project_module_a_stage_loads_is_one_of_its_deps(stage):
    loaded = subprocess.run([sys.executable, "-c", LOADED_MODULES, stage], cwd=REPO, capture_output=True, text=True,
                            check=True).stdout
    project_files = [Path(f).resolve().relative_to(REPO).as_posix() for f in json.loads(loaded.splitlines()[-1])
                     if Path(f).resolve().is_relative_to(REPO / "pipeline")]
    deps = [str(dep) for dep in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]["deps"]]
    assert f"pipeline/stages/{stage}.py" in project_files
    missing = [path for path in project_files if not covered(path, deps)]
    assert not missing, f"stage {stage} loads {missing} but dvc.yaml does not depend on them"


def test_a_new_import_is_caught_and_synced(tmp_path):
    shutil.copytree(REPO / "pipeline", tmp_path / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    generate = tmp_path / "pipeline/stages/generate.py"
    generate.write_text(generate.read_text() + "\n\ndef _late():\n    from pipeline.evaluation import telea  # noqa\n")
    problems = sync_dvc_yaml(tmp_path, write=False)
    assert len(problems) == 1 and "stage generate" in problems[0] and "pipeline/evaluation/telea.py" in problems[0]
    assert sync_dvc_yaml(tmp_path, write=True) == []
    deps = yaml.safe_load((tmp_path / "dvc.yaml").read_text())["stages"]["generate"]["deps"]
    assert "pipeline/evaluation/telea.py" in deps
    assert sync_dvc_yaml(tmp_path, write=False) == []


@pytest.mark.parametrize("stage", ["resolve_params", "generate", "validate", "drift", "hpo"])
def test_a_stage_that_trains_nothing_starts_without_importing_lightning(stage):
    """Lightning and torchmetrics take ~3 s to import, Optuna ~2 s more, paid by every `dvc repro` of
    every stage; hpo trains only when trials are asked for, and the quick profile asks for none."""
    probe = (f"import sys, pipeline.cli, pipeline.stages.{stage}; "
             "print(sorted(m for m in ('lightning', 'torchmetrics', 'optuna') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert loaded.strip().splitlines()[-1] == "[]"
