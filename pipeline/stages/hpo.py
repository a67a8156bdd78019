"""Stage hpo: paper 000's loss-weight search (section III-C). Optuna trains the inpainter once per
trial, as train_inpainter does, with the searched weights drawn from low..high by step; a trial
falling behind is pruned at the end of an epoch. Each trial is an MLflow run under the study's run.
The best trial's weights go to params.tuned.yaml, which train_inpainter and finetune read, so
`dvc repro` trains the best trial's model again.

With no trials (the quick profile) the stage writes an empty params.tuned.yaml and nothing else.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable
from contextlib import suppress
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from pipeline.config import TUNED_PARAMS_FILE, Config
from pipeline.data.dataset import MANIFEST, sha256_file
from pipeline.errors import DeoccludeError
from pipeline.registry.tracking import log_metrics, open_parent_run, record_on_run, set_tags, tracked_run
from pipeline.stages.common import Paths, provenance_tags, write_json, write_text

# Optuna, Lightning and the inpainter's training load only when trials run (`_search`, `_objective`):
# with none asked for, as in the quick profile, the stage takes about 5 s instead of 11.
if TYPE_CHECKING:
    import optuna

logger = logging.getLogger(__name__)

# Study user attribute: the MLflow run every trial's run nests under.
STUDY_RUN_ATTR = "mlflow_run_id"


def reports_dir(cfg: Config) -> Path:
    return cfg.root / "reports" / "hpo"


def trial_weight(value: float) -> float:
    """A sampled weight as trained and as written to params.tuned.yaml (no 3.6000000000000005)."""
    return round(value, 6)


def study_name(cfg: Config) -> str:
    """hpo.study and a hash of what decides a trial's result, so a changed search, dataset or inpainter
    starts a new study while a restart (or another worker with the same params) joins this one.
    tpe_trials is left out: asking for more of them continues the study."""
    hpo = cfg.hpo
    fixed_weights = {term: weight for term, weight in cfg.inpainter.loss_weights.items() if term not in hpo.terms}
    determined_by = {"inpainter": {**asdict(cfg.inpainter), "loss_weights": fixed_weights}, "seed": cfg.seed,
                     "resolution": cfg.data.resolution, "manifest": sha256_file(Paths(cfg.root).dataset / MANIFEST),
                     "search": [hpo.terms, hpo.low, hpo.high, hpo.step, hpo.metric, hpo.random_trials]}
    digest = hashlib.sha256(json.dumps(determined_by, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{hpo.study}-{digest}"


def write_tuned_params(path: Path, weights: dict[str, float], note: str) -> None:
    text = ("# Written by the hpo stage (paper 000's loss-weight search); do not edit. With hpo.apply, train_inpainter\n"
            "# and finetune use these weights over inpainter.loss_weights.\n"
            f"# {note}\n") + yaml.safe_dump({"inpainter": {"loss_weights": weights}}, sort_keys=False, default_flow_style=None)
    if not path.is_file() or path.read_text() != text:
        write_text(path, text)


def _objective(cfg: Config, study: optuna.Study, study_run_id: str) -> Callable[[optuna.Trial], float]:
    import optuna
    from optuna_integration import PyTorchLightningPruningCallback

    from pipeline.stages.train_inpainter import fit_inpainter, prepare
    from pipeline.tuning.sampler import SAMPLER_ATTR

    hpo = cfg.hpo
    registry = replace(cfg.registry, parent_run_id=study_run_id)
    models_dir = Paths(cfg.root).models / ".hpo" / study.study_name

    def objective(trial: optuna.Trial) -> float:
        weights = {term: trial_weight(trial.suggest_float(term, hpo.low, hpo.high, step=hpo.step)) for term in hpo.terms}
        section = replace(cfg.inpainter, loss_weights={**cfg.inpainter.loss_weights, **weights})
        training = prepare(cfg, section)
        sampler = trial.storage.get_trial_system_attrs(trial._trial_id).get(SAMPLER_ATTR, "")
        tags = {**provenance_tags(cfg, "hpo"), "optuna_study": study.study_name, "optuna_trial": str(trial.number),
                "optuna_sampler": sampler}
        trial_dir = trial_models_dir(models_dir, trial.number)
        pruned: optuna.TrialPruned | None = None
        with tracked_run(registry, f"trial-{trial.number}", tags, {**training.params, "optuna_trial": trial.number}) as run:
            run_id = run.info.run_id
            trial.set_user_attr(STUDY_RUN_ATTR, run_id)
            try:
                history = fit_inpainter(cfg, training, f"hpo_trial_{trial.number}", run_id, trial_dir,
                                        [PyTorchLightningPruningCallback(trial, hpo.metric)])
            except optuna.TrialPruned as error:
                pruned = error
                set_tags({"optuna_state": "PRUNED"})
            finally:
                shutil.rmtree(trial_dir, ignore_errors=True)
            if pruned is None:
                value = float(history.best[hpo.metric.replace("/", "_")])
                log_metrics({"objective": value, "best_epoch": float(history.best_epoch)})
                set_tags({"optuna_state": "COMPLETE"})
        if pruned is not None:
            record_on_run(registry, run_id, {}, {}, [], "KILLED")
            logger.info("trial %d %s: pruned (%s)", trial.number, weights, pruned)
            raise pruned
        logger.info("trial %d %s: %s %.4f", trial.number, weights, hpo.metric, value)
        return value

    return objective


def trial_models_dir(models_dir: Path, number: int) -> Path:
    return models_dir / f"trial-{number}"


def run(cfg: Config, study: str | None = None, pruner: optuna.pruners.BasePruner | None = None) -> Path:
    """Run trials of the study (`study` names it; by default hpo.study and a hash of the search) until
    it holds hpo's number of finished trials, then write the best weights to params.tuned.yaml, the
    plots and a summary to reports/hpo/. `pruner` replaces hpo.pruner's."""
    hpo = cfg.hpo
    tuned_path = cfg.root / TUNED_PARAMS_FILE
    summary_path = reports_dir(cfg) / "summary.json"
    if hpo.trials == 0:
        write_tuned_params(tuned_path, {}, "Empty: hpo asks for no trials, so inpainter.loss_weights stand.")
        write_json(summary_path, {"trials_requested": 0})
        logger.info("hpo: no trials asked for (hpo.random_trials + hpo.tpe_trials = 0); %s left empty", tuned_path.name)
        return tuned_path
    return _search(cfg, study, pruner, tuned_path, summary_path)


def _search(cfg: Config, study: str | None, pruner: optuna.pruners.BasePruner | None, tuned_path: Path,
            summary_path: Path) -> Path:
    import optuna
    from optuna.trial import FrozenTrial, TrialState

    from pipeline.tuning.plots import save_study_plots
    from pipeline.tuning.sampler import RandomThenTpeSampler, build_pruner
    from pipeline.tuning.study import count_trials, masked_url, open_storage, open_study, run_worker

    hpo = cfg.hpo
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our lines say what it would
    name = study or study_name(cfg)
    storage = open_storage(hpo.storage, hpo.heartbeat_seconds, hpo.max_retries)
    logger.info("hpo: study %s in %s, %d random + %d TPE trials on %s; another worker joins with "
                "`deocclude hpo --study %s` and the same storage", name, masked_url(hpo.storage), hpo.random_trials,
                hpo.tpe_trials, hpo.metric, name)

    def create_study_run() -> dict[str, str]:
        tags = {**provenance_tags(cfg, "hpo"), "optuna_study": name, "optuna_storage": masked_url(hpo.storage)}
        params = {"random_trials": hpo.random_trials, "tpe_trials": hpo.tpe_trials, "terms": ",".join(hpo.terms),
                  "range": f"{hpo.low}..{hpo.high} step {hpo.step}", "metric": hpo.metric, "direction": hpo.direction,
                  "pruner": hpo.pruner if pruner is None else type(pruner).__name__}
        return {STUDY_RUN_ATTR: open_parent_run(cfg.registry, f"hpo-{name}", tags, params)}

    the_study = open_study(storage, name, hpo.direction, RandomThenTpeSampler(hpo.random_trials, cfg.seed),
                           pruner or build_pruner(hpo.pruner, hpo.pruner_startup_trials, hpo.pruner_warmup_epochs),
                           hpo.trials, create_study_run)
    study_run_id = the_study.user_attrs[STUDY_RUN_ATTR]
    models_dir = Paths(cfg.root).models / ".hpo" / name

    def abandoned(trial: FrozenTrial) -> None:
        shutil.rmtree(trial_models_dir(models_dir, trial.number), ignore_errors=True)
        if trial.user_attrs.get(STUDY_RUN_ATTR):
            record_on_run(cfg.registry, trial.user_attrs[STUDY_RUN_ATTR], {}, {"optuna_state": "FAIL"}, [], "KILLED")

    ran = run_worker(the_study, storage, _objective(cfg, the_study, study_run_id), hpo.trials, hpo.max_retries, abandoned)
    for directory in (models_dir, models_dir.parent):
        with suppress(OSError):
            directory.rmdir()  # only when no other worker's trial is still training here
    counts = count_trials(the_study)
    complete = the_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise DeoccludeError(f"hpo: study {name} has no completed trial ({counts.pruned} pruned, {counts.failed} failed); "
                             f"no loss weights to write to {tuned_path.name}")
    best = the_study.best_trial
    weights = {term: trial_weight(best.params[term]) for term in hpo.terms}
    write_tuned_params(tuned_path, weights, f"Study {name}: trial {best.number} of {counts.finished}, "
                                            f"{hpo.metric} {best.value:.6g} ({hpo.direction}).")
    reports_dir(cfg).mkdir(parents=True, exist_ok=True)
    plots = save_study_plots(the_study, reports_dir(cfg), hpo.metric)
    the_study.trials_dataframe().to_csv(reports_dir(cfg) / "trials.csv", index=False)
    summary = {"study": name, "storage": masked_url(hpo.storage), "metric": hpo.metric, "direction": hpo.direction,
               "trials_requested": hpo.trials, "complete": counts.complete, "pruned": counts.pruned,
               "failed": counts.failed, "trials_run_here": ran,
               "best": {"trial": best.number, "value": best.value, "loss_weights": weights}}
    write_json(summary_path, summary)
    finished = counts.finished >= hpo.trials and counts.running == 0
    record_on_run(cfg.registry, study_run_id, {"best_value": best.value, "complete_trials": counts.complete,
                                               "pruned_trials": counts.pruned, "failed_trials": counts.failed},
                  {"best_trial": str(best.number), "best_loss_weights": json.dumps(weights)},
                  [*plots, summary_path, reports_dir(cfg) / "trials.csv", tuned_path], "FINISHED" if finished else None)
    logger.info("hpo: best trial %d of %s: %s %.4f with %s, written to %s", best.number, name, hpo.metric, best.value,
                weights, tuned_path)
    return tuned_path
