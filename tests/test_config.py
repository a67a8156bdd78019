import re

import pytest

from pipeline.config import ConfigError, load_config
from tests.conftest import tiny_params, write_params


def test_repository_params_load():
    from tests.conftest import REPO

    cfg = load_config(REPO / "params.yaml", env={})
    assert cfg.registry.tracking_uri == f"sqlite:///{REPO / 'mlflow.db'}"
    assert cfg.registry.artifact_root == REPO / "mlartifacts"


def test_environment_overrides_the_tracking_store(tmp_path):
    cfg = load_config(write_params(tmp_path, tiny_params()), env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:5999"})
    assert cfg.registry.tracking_uri == "http://127.0.0.1:5999"
    assert cfg.registry.artifact_root is None


def test_same_params_same_hash_and_a_change_changes_it(tmp_path):
    first = load_config(write_params(tmp_path, tiny_params()), env={}).params_hash
    assert load_config(tmp_path / "params.yaml", env={}).params_hash == first
    assert load_config(write_params(tmp_path, tiny_params({"finetune": {"epochs": 9}})), env={}).params_hash != first
    moved = tiny_params({"remote": {"url": "s3://elsewhere/dvc"}})   # where data are shared: not what a model is
    assert load_config(write_params(tmp_path, moved), env={}).params_hash == first


def test_paper_profile_reproduces_paper_000_settings(tmp_path):
    from tests.conftest import REPO
    import yaml

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["profile"] = "paper"
    cfg = load_config(write_params(tmp_path, params), env={})
    assert cfg.profile == "paper"
    seg, inp, fine = cfg.segmenter, cfg.inpainter, cfg.finetune
    assert (seg.arch, seg.resolution, seg.epochs, seg.batch_size, seg.optimizer.name, seg.optimizer.lr, seg.arch_kwargs) == \
        ("soclnet", 640, 20, 2, "sgd", 0.001, {})
    assert (inp.arch, inp.resolution, inp.epochs, inp.batch_size, inp.optimizer.name, inp.optimizer.lr) == \
        ("ifacenet", 256, 20, 8, "adam", 0.0001)
    assert inp.loss_weights == {"l1": 1.7, "perceptual": 4.0, "style": 3.6, "adversarial": 4.7}
    assert inp.pretrained and inp.perceptual_weights == "imagenet" and inp.discriminator.arch == "patchgan"
    assert (fine.epochs, fine.batch_size, fine.optimizer.lr) == (3, 8, 0.00001)
    # a profile is overrides: what it does not name comes from the base sections
    assert cfg.registry.experiment == "deocclude" and cfg.data.occluders["hand"] == 2


@pytest.mark.parametrize("profile", ["paper", "paper-sa-unet", "paper-mmrm", "paper-isnet"])
def test_paper_profiles_train_as_the_papers_do_not_as_the_quick_profile(tmp_path, profile):
    """The quick profile's one-cycle schedule, flips and pixel-only losses must not leak into a paper's profile."""
    from tests.conftest import REPO
    import yaml

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["profile"] = profile
    cfg = load_config(write_params(tmp_path, params), env={})
    for section in (cfg.segmenter, cfg.inpainter, cfg.finetune):
        assert section.optimizer.schedule == "constant" and not section.hflip
        assert section.trainer.precision == "32"
    assert cfg.segmenter.arch in ("soclnet", "sa-unet")


def test_standard_profile_is_the_quick_one_at_128_px_with_thousands_of_samples(tmp_path):
    from tests.conftest import REPO
    import yaml

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    quick = load_config(write_params(tmp_path, params), env={})
    params["profile"] = "standard"
    standard = load_config(write_params(tmp_path, params), env={})
    assert standard.data.resolution >= 128 and standard.data.count >= 1000
    assert (standard.segmenter.arch, standard.inpainter.arch) == (quick.segmenter.arch, quick.inpainter.arch)
    assert standard.segmenter.trainer.precision == standard.inpainter.trainer.precision == "auto"
    assert standard.data.resolution % 2 ** standard.inpainter.arch_kwargs["depth"] == 0


@pytest.mark.parametrize("profile, arch, discriminator", [("quick-ifacenet", "ifacenet", "patchgan"),
                                                        ("quick-isnet", "isnet", "isnet-patchgan")])
def test_each_papers_inpainter_has_a_quick_profile(tmp_path, profile, arch, discriminator):
    from tests.conftest import REPO
    import yaml

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    quick = load_config(write_params(tmp_path, params), env={})
    params["profile"] = profile
    cfg = load_config(write_params(tmp_path, params), env={})
    assert (cfg.inpainter.arch, cfg.inpainter.discriminator.arch) == (arch, discriminator)
    assert cfg.inpainter.perceptual_weights == "random" and {"perceptual", "style", "adversarial"} <= set(cfg.inpainter.loss_weights)
    assert (cfg.data, cfg.segmenter, cfg.inpainter.epochs) == (quick.data, quick.segmenter, quick.inpainter.epochs)


def test_sa_unet_profile_uses_paper_003_settings(tmp_path):
    from tests.conftest import REPO
    import yaml

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["profile"] = "paper-sa-unet"
    cfg = load_config(write_params(tmp_path, params), env={})
    seg = cfg.segmenter
    assert (seg.arch, seg.resolution, seg.batch_size, seg.optimizer.lr, seg.optimizer.betas, seg.opening_kernel,
            seg.test_time_flip) == ("sa-unet", 128, 8, 0.0002, (0.5, 0.999), 7, False)
    assert round(cfg.data.count * cfg.data.splits["train"]) == 14000  # paper 003 trains on 14,000 images


def test_mmrm_profile_uses_paper_002_settings(tmp_path):
    from tests.conftest import REPO
    import yaml

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["profile"] = "paper-mmrm"
    cfg = load_config(write_params(tmp_path, params), env={})
    inp = cfg.inpainter
    assert (inp.arch, inp.resolution, inp.optimizer.name, inp.optimizer.lr, inp.adversarial_loss, inp.discriminator.arch) == \
        ("mmrm-unet", 128, "adam", 0.0002, "hinge", "sn-patchgan")
    assert inp.loss_weights == {"adversarial": 0.01, "l1": 0.95, "tv": 0.04}
    assert inp.perceptual_weights == "none" and cfg.data.resolution == 128


def test_isnet_profile_uses_paper_004_settings(tmp_path):
    from tests.conftest import REPO
    import yaml

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["profile"] = "paper-isnet"
    cfg = load_config(write_params(tmp_path, params), env={})
    inp, seg, evaluation = cfg.inpainter, cfg.segmenter, cfg.evaluation
    assert (inp.arch, inp.arch_kwargs, inp.resolution, inp.batch_size, inp.optimizer.name, inp.optimizer.lr) == \
        ("isnet", {"width": 32, "blocks": 4}, 256, 8, "adam", 0.0001)
    assert (inp.adversarial_loss, inp.discriminator.arch, inp.discriminator.arch_kwargs, inp.discriminator.lr_scale) == \
        ("hinge", "isnet-patchgan", {"width": 64}, 0.1)
    # L1 + 3 (-L_D) + L_perc + 3 L_style, the paper's sums over three layers as perceptual.py's means
    assert inp.loss_weights == {"l1": 1.0, "adversarial": 3.0, "perceptual": 3.0, "style": 9.0}
    assert inp.perceptual_layers == ("pool1", "pool2", "pool3") and inp.perceptual_weights == "imagenet"
    assert cfg.data.resolution == 256 and (seg.arch, seg.resolution) == ("soclnet", 640)
    assert (evaluation.progressive, evaluation.progressive_kernel, evaluation.progressive_min_hole_ratio,
            evaluation.progressive_max_steps) == (True, 15, 0.2, 10)


@pytest.mark.parametrize("override, message", [
    ({"segmenter": {"optimizer": {"lr": -1}}}, "segmenter.optimizer.lr must be > 0, got -1"),
    ({"segmenter": {"optimizer": {"name": "rmsprop"}}}, "segmenter.optimizer.name must be adam or sgd"),
    ({"inpainter": {"perceptual_fallback": "lpips"}}, "inpainter.perceptual_fallback must be random or none"),
    ({"profile": "fast"}, "profile 'fast' is not defined under 'profiles' (defined: quick, standard, quick-ifacenet, quick-isnet, paper, paper-sa-unet, paper-mmrm, paper-isnet)"),
    ({"segmenter": {"opening_kernel": 6}}, "segmenter.opening_kernel must be 0 or an odd number > 1, got 6"),
    ({"segmenter": {"test_time_flip": "false"}}, "segmenter.test_time_flip must be true or false, got 'false'"),
    ({"finetune": {"hflip": 1}}, "finetune.hflip must be true or false, got 1"),
    ({"finetune": {"keep_if_no_gain": "yes"}}, "finetune.keep_if_no_gain must be true or false, got 'yes'"),
    ({"finetune": {"batches_per_epoch": 0}}, "finetune.batches_per_epoch must be null or an integer >= 1, got 0"),
    ({"segmenter": {"batches_per_epoch": 2.5}}, "segmenter.batches_per_epoch must be null or an integer >= 1, got 2.5"),
    ({"inpainter": {"loss_weights": {"l1": 1.0, "lpips": 2.0}}}, "inpainter.loss_weights: unknown term(s) ['lpips']"),
    ({"registry": {"promote_metric": "end_to_end.fid"}}, "registry.promote_metric must be <group>.<metric>"),
    ({"evaluation": {"mask_ratio_bins": [0.0, 0.5, 0.5, 1.0]}}, "strictly increasing edges in [0, 1]"),
    ({"segmentr": {}}, "unknown top-level key(s) ['segmentr']"),
    ({"data": {"splits": {"train": 0.5, "val": 0.1, "test": 0.1}}}, "data.splits must sum to 1"),
    ({"data": {"occluders": {"scarf": 1}}}, "unknown type(s) ['scarf']"),
    ({"inpainter": {"epochz": 3}}, "unknown key(s) in 'inpainter': epochz"),
    ({"data": {"mask_ratio_min": 0.7}}, "mask_ratio_min/max"),
    ({"evaluation": {"progressive_kernel": 4}}, "evaluation.progressive_kernel must be odd and >= 3, got 4"),
    ({"evaluation": {"progressive_max_steps": 0}}, "evaluation.progressive_max_steps must be >= 1, got 0"),
    ({"promotion": {"photograph_min_iou": 1.5}}, "promotion.photograph_min_iou must be in [0, 1] or null, got 1.5"),
    ({"promotion": {"photograph_min_iou": "half"}}, "promotion.photograph_min_iou must be in [0, 1] or null, got half"),
    ({"promotion": {"photograph_baselines": ["telea_gt_mask"]}},
     "promotion.photograph_baselines: unknown baseline(s) ['telea_gt_mask']; known: ['occluded_input', 'telea']"),
    ({"promotion": {"photograph_metrics": ["fid"]}}, "promotion.photograph_metrics: unknown metric(s) ['fid']"),
    ({"promotion": {"photograph_baselines": ["occluded_input"]}},
     "promotion.photograph_baselines and promotion.photograph_metrics go together: both set or both empty"),
])
def test_bad_values_name_the_file_and_the_key(tmp_path, override, message):
    path = write_params(tmp_path, tiny_params(override))
    with pytest.raises(ConfigError) as error:
        load_config(path, env={})
    assert str(path) in str(error.value) and message in str(error.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="params.yaml: file not found"):
        load_config(tmp_path / "params.yaml")


def test_resolved_params_merge_the_active_profile_and_nothing_else(tmp_path):
    from tests.conftest import REPO
    import yaml

    from pipeline.config import resolve_params

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["profile"] = "paper"
    resolved = resolve_params(write_params(tmp_path, params))
    assert resolved["profile"] == "paper" and "profiles" not in resolved
    assert resolved["finetune"]["optimizer"]["lr"] == 0.00001 and resolved["segmenter"]["resolution"] == 640
    assert resolved["registry"] == params["registry"]  # what the profile does not name comes from the base


@pytest.mark.parametrize("override, message", [
    ({"segmenter": {"trainer": {"precision": "fp8"}}}, "segmenter.trainer.precision must be one of"),
    ({"finetune": {"trainer": {"devices": 0}}}, "finetune.trainer.devices must be an integer >= 1 or 'auto'"),
    ({"segmenter": {"trainer": {"cache_mb": -1}}}, "segmenter.trainer.cache_mb must be >= 0"),
    ({"inpainter": {"trainer": {"gpus": 2}}}, "unknown key(s) in 'inpainter.trainer': gpus"),
    ({"evaluation": {"device": "tpu"}}, "evaluation.device must be auto, cpu, cuda or cuda:N"),
])
def test_trainer_and_device_settings_are_checked(tmp_path, override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(write_params(tmp_path, tiny_params(override)), env={})


def test_remote_comes_from_params_and_the_environment_overrides_it_on_this_machine(tmp_path):
    path = write_params(tmp_path, tiny_params({"remote": {"url": "s3://team-data/dvc", "region": "eu-west-1"}}))
    shared = load_config(path, env={}).remote
    assert (shared.name, shared.url, shared.endpoint_url, shared.region, shared.overrides) == \
        ("storage", "s3://team-data/dvc", "", "eu-west-1", {})
    remote = load_config(path, env={"DEOCCLUDE_REMOTE_ENDPOINT_URL": "http://127.0.0.1:9000",
                                    "DEOCCLUDE_REMOTE_REGION": "us-east-1", "AWS_SECRET_ACCESS_KEY": "s3cr3t"}).remote
    assert (remote.url, remote.endpoint_url, remote.region) == ("s3://team-data/dvc", "", "eu-west-1")  # params.yaml's
    assert remote.overrides == {"endpoint_url": "http://127.0.0.1:9000", "region": "us-east-1"}
    in_use = remote.in_use()
    assert (in_use.url, in_use.endpoint_url, in_use.region) == ("s3://team-data/dvc", "http://127.0.0.1:9000", "us-east-1")
    assert "s3cr3t" not in repr(remote)


@pytest.mark.parametrize("override, env, message", [
    ({"url": "gs://bucket/dvc"}, {}, "remote.url must be s3://bucket/prefix (or empty: no remote), got 'gs://bucket/dvc'"),
    ({"url": "s3://AKIA:s3cr3t@bucket/dvc"}, {}, "remote.url must not hold credentials; set AWS_ACCESS_KEY_ID"),
    ({}, {"DEOCCLUDE_REMOTE_ENDPOINT_URL": "http://minio:s3cr3t@host:9000"},
     "DEOCCLUDE_REMOTE_ENDPOINT_URL (over remote.endpoint_url) must not hold credentials"),
    ({}, {"DEOCCLUDE_REMOTE_ENDPOINT_URL": "minio:9000"}, "must be http(s)://host[:port] (or empty: AWS), got 'minio:9000'"),
    ({"region": "EU West"}, {}, "remote.region must be an AWS region name such as eu-west-1"),
    ({"name": "my remote"}, {}, "remote.name must be letters, digits"),
    ({"bucket": "x"}, {}, "unknown key(s) in 'remote': bucket"),
    ({"overrides": {"url": "s3://x/y"}}, {}, "remote.overrides is not a setting"),
])
def test_bad_remote_settings_name_the_file_and_the_setting_and_never_echo_a_secret(tmp_path, override, env, message):
    path = write_params(tmp_path, tiny_params({"remote": override}))
    with pytest.raises(ConfigError, match=re.escape(message)) as error:
        load_config(path, env=env)
    assert str(path) in str(error.value) and "s3cr3t" not in str(error.value)
