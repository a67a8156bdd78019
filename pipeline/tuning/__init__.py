"""Optuna studies shared by several workers: paper 000's random-then-TPE sampler, slots that keep a
study at exactly its requested number of trials across kills and workers, and the study's plots.
Knows Optuna only; the hpo stage adds training and MLflow."""
