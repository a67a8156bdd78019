#!/usr/bin/env bash
# Wall time of the pipeline part of `make run` (from a clean workspace, after install) and of a
# `dvc repro` with nothing changed. Run from the repository root:  bash benchmarks/pipeline.sh
set -euo pipefail
export PATH="$PWD/.venv/bin:$PATH" GX_ANALYTICS_ENABLED=false MLFLOW_DISABLE_TELEMETRY=true
state=$(mktemp -d)
trap 'rm -rf "$state"' EXIT
# A private store and DVC cache state, so the measurement starts cold without touching yours.
export MLFLOW_TRACKING_URI="sqlite:///$state/mlflow.db"
rm -rf data/synthetic models reports
start=$(date +%s.%N)
deocclude run > "$state/run.log" 2>&1 || { tail -50 "$state/run.log"; exit 1; }
end=$(date +%s.%N)
python3 -c "print(f'make run (pipeline part): {$end - $start:.1f} s')"
grep -E "^(Stages run|Champion)" "$state/run.log"
for i in 1 2 3; do
  start=$(date +%s.%N); dvc repro > /dev/null; end=$(date +%s.%N)
  python3 -c "print(f'dvc repro, nothing changed (run $i): {$end - $start:.2f} s')"
done
