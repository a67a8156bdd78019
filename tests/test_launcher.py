"""bin/deocclude, the command of every dvc.yaml stage, finds the project's Python without PATH."""

import shutil
import subprocess

from tests.conftest import REPO


def test_stage_command_runs_with_no_venv_on_path_from_a_subdirectory_copy(tmp_path):
    # As in `dvc exp run --temp`: a copy of the repo below the checkout that holds .venv.
    checkout = tmp_path / "checkout"
    copy = checkout / ".dvc/tmp/exps/tmp1234"
    shutil.copytree(REPO / "bin", copy / "bin")
    (checkout / ".venv").symlink_to(REPO / ".venv")
    shutil.copytree(REPO / "pipeline", copy / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    result = subprocess.run([str(copy / "bin/deocclude"), "--help"], cwd=copy, env={"PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "train-segmenter" in result.stdout and "resolve-params" in result.stdout


def test_without_a_usable_python_it_says_what_it_looked_for(tmp_path):
    shutil.copytree(REPO / "bin", tmp_path / "bin")
    fake_python = tmp_path / "fake"
    fake_python.write_text("#!/bin/sh\nexit 1\n")
    fake_python.chmod(0o755)
    result = subprocess.run([str(tmp_path / "bin/deocclude"), "generate"], cwd=tmp_path,
                            env={"PATH": "/usr/bin:/bin", "DEOCCLUDE_PYTHON": str(fake_python)},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 127
    assert "no Python with deocclude's dependencies found" in result.stderr and "make install" in result.stderr
