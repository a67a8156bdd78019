"""Paper 001's synthetic same-identity test: how it is built, scored, switched off, skipped, and checked."""

import json
import math
from dataclasses import replace

import pytest
import torch

from pipeline.config import ConfigError, ReferenceConfig, load_config
from pipeline.evaluation.html_report import _same_identity
from pipeline.evaluation.perceptual import Unavailable
from pipeline.evaluation.same_identity import (MASK_RATIOS, METHODS, NO_PRIOR_SIGMA, build_same_identity_test,
                                               method_settings, score_same_identity)
from pipeline.models.checkpoint import NetworkSettings
from pipeline.models.registry import create_model
from pipeline.stages import evaluate
from tests.conftest import tiny_arch_kwargs, tiny_params, write_params

OCCLUDERS = {"box": 1.0, "hand": 1.0}
NO_LPIPS = Unavailable("lpips", "ImageNet alex weights not in the local torch cache: test")


def tiny(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, "inpainter", **tiny_arch_kwargs(name)).eval()


def test_one_occluded_view_and_clean_references_per_person_reproducibly():
    test = build_same_identity_test(7, people=3, references=2, size=32, occluders=OCCLUDERS)
    again = build_same_identity_test(7, people=3, references=2, size=32, occluders=OCCLUDERS)
    assert test.occluded.shape == test.clean.shape == (3, 3, 32, 32) and test.masks.shape == (3, 1, 32, 32)
    assert [tuple(r.shape) for r in test.references] == [(2, 3, 32, 32)] * 3
    assert torch.equal(test.occluded, again.occluded) and torch.equal(test.references[2], again.references[2])
    share = test.masks.flatten(1).mean(dim=1)
    assert ((share > MASK_RATIOS[0] - 0.1) & (share < MASK_RATIOS[1] + 0.1)).all()
    visible = (test.masks == 0).expand_as(test.clean)
    assert torch.equal(test.occluded[visible], test.clean[visible])     # the same photograph, occluder aside
    assert not torch.equal(test.references[0][0], test.clean[0])        # another view of that person


def test_the_three_methods_differ_only_in_their_optimisation_settings():
    reference = ReferenceConfig(steps=100, sigma=0.3, discriminator_weight=0.1)
    methods = method_settings(reference, steps=5)
    assert list(methods) == list(METHODS) and methods["plain"] is None
    assert methods["prior"] == replace(reference, steps=5)
    assert methods["no_prior"] == replace(reference, steps=5, sigma=NO_PRIOR_SIGMA, discriminator_weight=0.0)
    assert method_settings(reference)["prior"].steps == 100


def test_every_method_scores_finite_numbers_and_local_lpips_says_why_it_is_missing():
    test = build_same_identity_test(0, people=2, references=2, size=32, occluders=OCCLUDERS)
    rows = score_same_identity(tiny("unet-inpainter"), test, ReferenceConfig(lr=0.1, perceptual_fallback="none"),
                               NO_LPIPS, steps=3)
    assert set(rows) == set(METHODS)
    assert rows["no_prior"]["psnr_masked"] != rows["plain"]["psnr_masked"]     # the optimisation ran
    for row in rows.values():
        assert all(math.isfinite(row[name]) for name in ("psnr_masked", "ssim_masked", "l1_masked", "seconds_per_image"))
        assert row["local_lpips"] == NO_LPIPS.reason


@pytest.fixture
def tiny_cfg(tmp_path):
    def load(**evaluation):
        return load_config(write_params(tmp_path, tiny_params({"evaluation": evaluation})))
    return load


def _models(inpainter: str) -> evaluate.Models:
    net = tiny(inpainter)
    settings = NetworkSettings(inpainter, tiny_arch_kwargs(inpainter), "inpainter", 32)
    return evaluate.Models(None, net, net, None, settings)


def test_the_stage_records_the_scores_or_leaves_the_test_out_with_no_people(tiny_cfg):
    cfg = tiny_cfg(same_identity_people=1, same_identity_references=1, same_identity_steps=None)
    cfg = replace(cfg, reference=replace(cfg.reference, steps=1, perceptual_fallback="none"))
    record, timing = evaluate.same_identity_test(cfg, _models("ifacenet"), NO_LPIPS)
    assert (record["people"], record["references"]) == (1, 1)
    assert record["settings"]["steps"] == 1 and record["realism_term"] is False     # no steps: reference.steps
    assert set(record["scores"]) == set(timing["seconds_per_image"]) == set(METHODS)
    assert json.loads(json.dumps(record)) == record          # metrics.json holds it as it is
    assert evaluate.same_identity_test(tiny_cfg(same_identity_people=0), _models("ifacenet"), NO_LPIPS) is None
    assert evaluate.same_identity_section({}) == "" and _same_identity({}) == ""


def test_an_inpainter_that_cannot_be_inverted_is_skipped_with_the_reason(tiny_cfg):
    record, timing = evaluate.same_identity_test(tiny_cfg(), _models("isnet"), NO_LPIPS)
    assert timing is None and "scores" not in record
    assert "ISNet has no encode/decode split" in record["skipped"]
    metrics = {"same_identity": record}
    assert "Skipped: ISNet has no encode/decode split" in evaluate.same_identity_section(metrics)
    assert "Skipped: ISNet has no encode/decode split" in _same_identity(metrics)


@pytest.mark.parametrize("key, value, message", [
    ("same_identity_people", -1, "evaluation.same_identity_people must be an integer >= 0 (0: no same-identity test), got -1"),
    ("same_identity_references", 0, "evaluation.same_identity_references must be an integer >= 1, got 0"),
    ("same_identity_steps", 0, "evaluation.same_identity_steps must be an integer >= 1 or null (null: reference.steps), got 0"),
    ("same_identity_steps", 2.5, "evaluation.same_identity_steps must be an integer >= 1 or null"),
])
def test_bad_same_identity_settings_are_refused_by_name(tiny_cfg, key, value, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        tiny_cfg(**{key: value})
