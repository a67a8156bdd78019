"""`deocclude reproduce`: a registered version's params and data version restored, the pipeline
rerun from scratch, and the recorded metrics reproduced exactly on the same machine."""

from __future__ import annotations

import yaml

from tests.conftest import deocclude, make_project, write_params

# Fewer epochs than the tiny config: the pipeline runs twice here, and any number of epochs must reproduce.
FAST = {"segmenter": {"epochs": 1}, "inpainter": {"epochs": 1}, "finetune": {"epochs": 1}}


def test_reproduce_restores_params_and_gives_identical_metrics(tmp_path):
    root = make_project(tmp_path / "project", FAST)
    first = deocclude(root, "repro", timeout=1200)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    recorded_params = (root / "params.yaml").read_text()

    edited = yaml.safe_load(recorded_params)
    edited["finetune"]["optimizer"]["lr"] = 0.0005  # the user has moved on since version 1
    write_params(root, edited)

    result = deocclude(root, "reproduce", "models:/deocclusion/1", timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (root / "params.yaml").read_text() == recorded_params
    assert "models:/deocclusion/1: reproduced exactly" in result.stdout
    assert "data version: " in result.stdout and "(same)" in result.stdout


def test_a_reproduction_compares_every_metric_but_timings():
    from pipeline.registry.reproduce import RecordedVersion, check_reproduction

    recorded = RecordedVersion("models:/deocclusion/1", "1", "run", "abc", "data1",
                               {"end_to_end": {"psnr": 20.0}, "latency": {"batch_1": {"median_ms": 700.0}}})
    same = check_reproduction(recorded, {"end_to_end": {"psnr": 20.0}, "latency": {"batch_1": {"median_ms": 70.0}}},
                              "data1", "abc")
    assert same.identical and "reproduced exactly (1 metrics identical" in same.text
    changed = check_reproduction(recorded, {"end_to_end": {"psnr": 20.000001}}, "data1", "abc-dirty")
    assert not changed.identical and "end_to_end.psnr: recorded 20.0, now 20.000001" in changed.text
    assert not check_reproduction(recorded, recorded.metrics, "data2", "abc").identical
