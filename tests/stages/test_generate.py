"""The generate stage renders the same dataset in worker processes as in one."""

import filecmp
from pathlib import Path

from pipeline.config import load_config
from pipeline.data.facts import STATS_FILE
from pipeline.stages import generate
from pipeline.stages.common import Paths
from tests.conftest import tiny_params, write_params


def _generated(root: Path, monkeypatch, cpus: int) -> Path:
    monkeypatch.setattr(generate, "available_cpus", lambda: cpus)
    monkeypatch.setattr(generate, "SAMPLES_PER_WORKER", 4)
    root.mkdir()
    generate.run(load_config(write_params(root, tiny_params({"data": {"count": 18}}))))
    return Paths(root).dataset


def test_worker_processes_write_the_files_one_process_writes(tmp_path, monkeypatch, caplog):
    caplog.set_level("INFO", logger="pipeline.stages.generate")
    serial = _generated(tmp_path / "serial", monkeypatch, cpus=1)
    assert "in 1 process(es)" in caplog.text
    parallel = _generated(tmp_path / "parallel", monkeypatch, cpus=2)
    assert "in 2 process(es)" in caplog.text
    files = sorted(path.relative_to(serial) for path in serial.rglob("*") if path.is_file())
    assert len([f for f in files if f.parts[0] == "images"]) == 18
    assert files == sorted(path.relative_to(parallel) for path in parallel.rglob("*") if path.is_file())
    # stats.jsonl records each file's mtime, the one thing that differs between two renderings
    compared = [str(f) for f in files if f.name != STATS_FILE]
    _, mismatch, errors = filecmp.cmpfiles(serial, parallel, compared, shallow=False)
    assert not mismatch and not errors
    assert not parallel.with_name(parallel.name + ".partial").exists()


def test_jobs_are_cut_into_consecutive_runs_in_order():
    jobs = list(range(10))
    assert generate.chunks(jobs, 3) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert generate.chunks(jobs, 1) == [jobs]
    assert generate.chunks(jobs[:2], 8) == [[0], [1]]
    assert generate.chunks([], 4) == []
