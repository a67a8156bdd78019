"""`deocclude reproduce`'s verdict. The command itself, a registered version's params restored and
the pipeline rerun from scratch into identical metrics, runs in tests/test_pipeline.py on the
pipeline project that test module has already trained."""

from __future__ import annotations


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
