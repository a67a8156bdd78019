#!/usr/bin/env python3
"""Start shared MLflow and Prefect servers on 127.0.0.1 for a team, and print how to use them.

    python infra/servers.py start            # both servers, state under infra/.state
    python infra/servers.py start --only mlflow --mlflow-port 5001 --state-dir /tmp/s
    python infra/servers.py stop [--state-dir DIR]

`start` waits until each server answers, writes their pids to the state folder and prints the
`export` lines that point the pipeline, the CLI and the tests at them.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

HOST = "127.0.0.1"
BIN = Path(sys.executable).parent


def _wait_until_up(url: str, process: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with code {process.returncode}; see {log}:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    process.terminate()
    raise SystemExit(f"{url} did not answer within {timeout:.0f} s; see {log}")


def start_mlflow(state: Path, port: int) -> tuple[subprocess.Popen, str]:
    store = state / "mlflow"
    (store / "artifacts").mkdir(parents=True, exist_ok=True)
    log = state / "mlflow.log"
    process = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--host", HOST, "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}",
         "--artifacts-destination", str(store / "artifacts"), "--serve-artifacts"],
        stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
    )
    url = f"http://{HOST}:{port}"
    _wait_until_up(f"{url}/health", process, log, timeout=120)
    return process, url


def start_prefect(state: Path, port: int) -> tuple[subprocess.Popen, str]:
    log = state / "prefect.log"
    env = {**os.environ, "PREFECT_HOME": str(state / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    process = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", HOST, "--port", str(port)],
                               stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True, env=env)
    url = f"http://{HOST}:{port}/api"
    _wait_until_up(f"{url}/health", process, log, timeout=180)
    return process, url


def start(args: argparse.Namespace) -> None:
    state = Path(args.state_dir).resolve()
    state.mkdir(parents=True, exist_ok=True)
    pids, exports = {}, {}
    if args.only in (None, "mlflow"):
        process, url = start_mlflow(state, args.mlflow_port)
        pids["mlflow"], exports["MLFLOW_TRACKING_URI"] = process.pid, url
    if args.only in (None, "prefect"):
        process, url = start_prefect(state, args.prefect_port)
        pids["prefect"], exports["PREFECT_API_URL"] = process.pid, url
    (state / "pids.json").write_text(json.dumps(pids))
    print(f"# servers started; state in {state}; stop with: python infra/servers.py stop --state-dir {state}")
    for name, value in exports.items():
        print(f"export {name}={value}")


def stop(args: argparse.Namespace) -> None:
    pids_file = Path(args.state_dir) / "pids.json"
    if not pids_file.is_file():
        raise SystemExit(f"{pids_file}: no servers recorded as started")
    for name, pid in json.loads(pids_file.read_text()).items():
        try:
            os.killpg(pid, signal.SIGTERM)
            print(f"stopped {name} (pid {pid})")
        except ProcessLookupError:
            print(f"{name} (pid {pid}) was not running")
    pids_file.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("start", "stop"))
    parser.add_argument("--state-dir", default=str(Path(__file__).parent / ".state"))
    parser.add_argument("--only", choices=("mlflow", "prefect"))
    parser.add_argument("--mlflow-port", type=int, default=5000)
    parser.add_argument("--prefect-port", type=int, default=4200)
    args = parser.parse_args()
    start(args) if args.command == "start" else stop(args)


if __name__ == "__main__":
    main()
