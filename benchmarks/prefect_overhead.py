"""Prefect's cost: per stage (no-op stages, as tasks against direct calls) and the retraining flow's
no-change path from the command line, the Prefect server's start included.

    .venv/bin/python benchmarks/prefect_overhead.py [--stages 8] [--project DIR] [--out results/prefect.json]

Without --project, a tiny project (tests/conftest.py's configuration) is built and run once first,
so that the timed `deocclude retrain` finds nothing changed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

from prefect import flow, task  # noqa: E402

from flows.pipeline_flow import reproduce_stages  # noqa: E402


def noop() -> int:
    return 1


noop_task = task(noop, name="noop")


@flow(name="noop-tasks")
def noop_flow(count: int) -> int:
    return sum(noop_task() for _ in range(count))


@flow(name="dvc-stages")
def dvc_stage_flow(root: str, stages: list[str]) -> int:
    return len(reproduce_stages(Path(root), stages, None))


def dvc_project(root: Path, count: int) -> list[str]:
    stages = [f"stage_{i}" for i in range(count)]
    root.mkdir(parents=True)
    dvc_yaml = {"stages": {name: {"cmd": f"{sys.executable} -c \"open('{name}.out', 'w').write('x')\"",
                                  "outs": [f"{name}.out"]} for name in stages}}
    (root / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml))
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=root, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "repro", "-q"], cwd=root, check=True)
    return stages


def timed(function, *args) -> float:
    started = time.perf_counter()
    function(*args)
    return time.perf_counter() - started


def stage_overhead(count: int, workdir: Path) -> dict[str, float]:
    noop_flow(1)  # the ephemeral server starts once, outside the timings
    direct_noop = timed(lambda: [noop() for _ in range(count)])
    flow_noop = min(timed(noop_flow, count) for _ in range(3))
    stages = dvc_project(workdir / "dvc-noop", count)
    direct_dvc = min(timed(lambda: [subprocess.run([sys.executable, "-m", "dvc", "repro", "--single-item", stage, "-q"],
                                                   cwd=workdir / "dvc-noop", check=True) for stage in stages])
                     for _ in range(2))
    flow_dvc = min(timed(dvc_stage_flow, str(workdir / "dvc-noop"), stages) for _ in range(2))
    return {"stages": count,
            "noop_direct_s": direct_noop, "noop_flow_s": flow_noop,
            "noop_overhead_per_stage_s": (flow_noop - direct_noop) / count,
            "dvc_up_to_date_direct_s": direct_dvc, "dvc_up_to_date_flow_s": flow_dvc,
            "dvc_overhead_per_stage_s": (flow_dvc - direct_dvc) / count}


def no_change_path(project: Path) -> dict[str, float]:
    deocclude = [str(Path(sys.executable).parent / "deocclude"), "--params", str(project / "params.yaml")]
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # the ephemeral server, started each time
    times = []
    for _ in range(3):
        started = time.perf_counter()
        result = subprocess.run([*deocclude, "retrain"], cwd=project, env=env, capture_output=True, text=True)
        times.append(time.perf_counter() - started)
        if result.returncode != 0 or "no retraining: nothing changed" not in result.stdout + result.stderr:
            raise SystemExit(f"retrain did not take the no-change path:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return {"no_change_retrain_s": sorted(times)[1], "no_change_retrain_all_s": times}


def tiny_project(workdir: Path) -> Path:
    from tests.conftest import make_project, project_env

    root = make_project(workdir / "tiny")
    run = subprocess.run([str(Path(sys.executable).parent / "deocclude"), "--params", str(root / "params.yaml"), "run"],
                         cwd=root, env=project_env(root), capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"the tiny pipeline failed:\n{run.stderr[-3000:]}")
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", type=int, default=8)
    parser.add_argument("--project", type=Path, help="an up-to-date project for the no-change path")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        results = stage_overhead(args.stages, workdir)
        results.update(no_change_path(args.project.resolve() if args.project else tiny_project(workdir)))
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
