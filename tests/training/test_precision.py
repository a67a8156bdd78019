import pytest
import torch

import json
import logging
import time

from pipeline.training import precision as precision_module
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


def step_slower_under(autocast_state: bool, seconds: float = 0.02):
    def step() -> None:
        if torch.is_autocast_enabled("cpu") == autocast_state:
            time.sleep(seconds)
    return step


def test_auto_times_the_network_where_the_flags_allow_bf16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(precision_module, "cpu_has_fast_bf16", lambda: True)
    assert resolve_precision("auto", "cpu", step_slower_under(autocast_state=True)) == "32"
    assert resolve_precision("auto", "cpu", step_slower_under(autocast_state=False)) == "bf16-mixed"
    assert resolve_precision("auto", "cpu") == "bf16-mixed"            # nothing to time: the flags decide
    monkeypatch.setattr(precision_module, "cpu_has_fast_bf16", lambda: False)
    assert resolve_precision("auto", "cpu", step_slower_under(autocast_state=False)) == "32"   # emulated bf16


def test_the_timed_step_leaves_the_network_and_the_random_state_as_they_were():
    from pipeline.models.registry import create_model
    from pipeline.stages.training import network_step

    class Holder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = create_model("sa-unet", width=4, max_channels=16)

    holder = Holder()
    before = {name: value.clone() for name, value in holder.net.state_dict().items()}
    random_state = torch.get_rng_state()
    step = network_step(holder, batch_size=2, resolution=64)
    step()
    assert torch.equal(torch.get_rng_state(), random_state)
    after = holder.net.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert all(parameter.grad is None for parameter in holder.net.parameters())


def test_auto_remembers_its_first_choice_per_network_on_this_machine(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(precision_module, "cpu_has_fast_bf16", lambda: True)
    caplog.set_level(logging.INFO, logger="pipeline.training.precision")
    memory = tmp_path / "cache" / "precision.json"
    assert resolve_precision("auto", "cpu", step_slower_under(autocast_state=False), "net-a", memory) == "bf16-mixed"
    # timings that would now say fp32 do not change a choice the weights already depend on
    assert resolve_precision("auto", "cpu", step_slower_under(autocast_state=True), "net-a", memory) == "bf16-mixed"
    assert "as first timed on this machine" in caplog.text
    assert resolve_precision("auto", "cpu", step_slower_under(autocast_state=True), "net-b", memory) == "32"
    assert len(json.loads(memory.read_text())) == 2
    assert resolve_precision("auto", "cpu", step_slower_under(autocast_state=True)) == "32"    # no network: timed
    memory.write_text("{not json")
    assert resolve_precision("auto", "cpu", step_slower_under(autocast_state=True), "net-a", memory) == "32"
    assert "unreadable" in caplog.text and len(json.loads(memory.read_text())) == 1
    assert not list(memory.parent.glob("*.partial"))


def test_the_memory_lives_in_the_users_cache_unless_told_otherwise(tmp_path):
    assert precision_module.memory_path({"HOME": "/h", "XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "deocclude" / "precision.json"
    assert precision_module.memory_path({"DEOCCLUDE_PRECISION_CACHE": str(tmp_path / "p.json")}) == tmp_path / "p.json"
    assert precision_module.machine_key("net-a") != precision_module.machine_key("net-b")


def test_a_cache_that_cannot_be_written_does_not_stop_training(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(precision_module, "cpu_has_fast_bf16", lambda: True)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    memory = blocker / "precision.json"                                 # its folder is a file
    assert resolve_precision("auto", "cpu", step_slower_under(autocast_state=True), "net-a", memory) == "32"
    assert "cannot remember the choice" in caplog.text
    monkeypatch.setattr(precision_module, "memory_path", lambda: None)  # no home directory
    assert resolve_precision("auto", "cpu", step_slower_under(autocast_state=False), "net-a") == "bf16-mixed"
