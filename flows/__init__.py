"""Prefect flows over the pipeline's stages (pipeline_flow, retrain, deployments)."""

import os

# Prefect's ephemeral server gets 20 s to answer by default, which a busy 2-core machine can miss;
# an explicit PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS still wins.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
