import pytest
import torch

from pipeline.training.precision import cpu_has_fast_bf16, resolve_precision


@pytest.mark.parametrize("precision", ["32", "bf16-mixed", "16-mixed"])
def test_an_explicit_precision_is_kept(precision):
    assert resolve_precision(precision, "cpu") == precision


def test_bf16_needs_avx512_bf16_or_amx():
    assert cpu_has_fast_bf16(frozenset({"avx2", "avx512f", "avx512_bf16"}))
    assert cpu_has_fast_bf16(frozenset({"amx_bf16", "amx_tile"}))
    assert not cpu_has_fast_bf16(frozenset({"avx2", "fma", "avx512f"}))


def test_auto_on_this_cpu_follows_its_flags(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    expected = "bf16-mixed" if cpu_has_fast_bf16() else "32"
    assert resolve_precision("auto", "auto") == expected
    assert resolve_precision("auto", "cpu") == expected


def test_auto_in_params_is_accepted(tmp_path):
    from pipeline.config import load_config
    from tests.conftest import tiny_params, write_params

    config = load_config(write_params(tmp_path, tiny_params({"segmenter": {"trainer": {"precision": "auto"}}})))
    assert config.segmenter.trainer.precision == "auto"
