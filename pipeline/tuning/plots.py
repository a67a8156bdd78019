"""A study's plots as images: optimisation history, intermediate values (where pruning cut trials
short) and parameter importances."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.trial import TrialState

logger = logging.getLogger(__name__)


def save_study_plots(study: optuna.Study, directory: Path, target_name: str) -> list[Path]:
    """Write the plots the study's trials support to `directory`; returns their paths. Importances
    need two completed trials, and a history one."""
    import matplotlib

    matplotlib.use("Agg")  # no display: the plots only go to files
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    plots = {"optimization_history.png": lambda: optuna_plots.plot_optimization_history(study, target_name=target_name),
             "intermediate_values.png": lambda: optuna_plots.plot_intermediate_values(study)}
    if len(complete) >= 2:
        plots["param_importances.png"] = lambda: optuna_plots.plot_param_importances(study, target_name=target_name)
    else:
        logger.info("parameter importances need 2 completed trials, the study has %d: not plotted", len(complete))
    if not complete:
        return []
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, plot in plots.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            try:
                axes = plot()
            except (RuntimeError, ValueError, ZeroDivisionError) as error:  # e.g. importances of identical scores
                logger.warning("%s not plotted: %s", name, error)
                continue
        figure = axes.figure
        figure.set_size_inches(8, 5)
        figure.tight_layout()
        figure.savefig(directory / name, dpi=100)
        plt.close(figure)
        written.append(directory / name)
    return written
