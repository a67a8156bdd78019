# A Prefect worker that can run the deocclude flows: Prefect's image (the version in pyproject.toml)
# with the project's dependencies installed. Built from the repository root (compose: context ..).
# The flows run from the team's checkout mounted at /srv/deocclude (prefect.yaml's pull step reads
# DEOCCLUDE_PROJECT_DIR), so a new commit needs no rebuild unless pyproject.toml changed.
FROM prefecthq/prefect:3.8.8-python3.11
WORKDIR /opt/deocclude
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY flows ./flows
# torch first, by exact version, as the Makefile does (PyPI's Linux wheel of it is the CUDA build).
RUN pip install --no-cache-dir torch==2.13.0 && pip install --no-cache-dir . \
 && git config --system --add safe.directory '*'
ENV DEOCCLUDE_PROJECT_DIR=/srv/deocclude
WORKDIR /srv/deocclude
