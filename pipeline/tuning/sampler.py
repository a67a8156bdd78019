"""Paper 000's search: the first trials sample at random, the rest with TPE."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.exceptions import ExperimentalWarning
from optuna.samplers import BaseSampler, RandomSampler, TPESampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

RANDOM, TPE = "random", "tpe"
# The trial's system attribute naming the sampler that drew its values (copied onto a retried trial).
SAMPLER_ATTR = "sampler"


def trial_seed(seed: int, number: int) -> int:
    """One seed per trial number: workers sharing a study and a restarted worker never draw the same
    values twice, and the same study seed draws the same values for the same trial number."""
    return (seed * 1_000_003 + number) % 2**32


class RandomThenTpeSampler(BaseSampler):
    """Trials numbered below `random_trials` sample with RandomSampler, the others with TPE (which
    learns from every finished trial, whichever sampler drew it). Each trial gets its own seeded
    sampler, so the draw depends on the trial's number, not on which worker runs it."""

    def __init__(self, random_trials: int, seed: int) -> None:
        self.random_trials = random_trials
        self.seed = seed
        self._samplers: dict[int, BaseSampler] = {}

    def phase(self, trial: FrozenTrial) -> str:
        return RANDOM if trial.number < self.random_trials else TPE

    def _sampler_for(self, trial: FrozenTrial) -> BaseSampler:
        sampler = self._samplers.get(trial._trial_id)
        if sampler is None:
            seed = trial_seed(self.seed, trial.number)
            if self.phase(trial) == RANDOM:
                sampler = RandomSampler(seed=seed)
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ExperimentalWarning)
                    # constant_liar: a running trial counts as a poor one, so parallel workers spread out.
                    sampler = TPESampler(seed=seed, n_startup_trials=0, constant_liar=True)
            self._samplers[trial._trial_id] = sampler
        return sampler

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._sampler_for(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self._sampler_for(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._sampler_for(trial).sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        if SAMPLER_ATTR not in trial.system_attrs:  # a retried trial keeps its original's
            study._storage.set_trial_system_attr(trial._trial_id, SAMPLER_ATTR, self.phase(trial))
        self._sampler_for(trial).before_trial(study, trial)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None) -> None:
        sampler = self._samplers.pop(trial._trial_id, None)
        if sampler is not None:
            sampler.after_trial(study, trial, state, values)


def build_pruner(name: str, startup_trials: int, warmup_epochs: int) -> optuna.pruners.BasePruner:
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=warmup_epochs)
    return optuna.pruners.NopPruner()
