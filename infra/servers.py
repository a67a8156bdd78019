#!/usr/bin/env python3
"""The team's stack without Docker: the services of infra/docker-compose.yml as local processes.

Postgres (Debian's `postgresql`; databases mlflow, prefect and optuna, by infra/postgres-init.sh), an S3-compatible server
(moto's server mode standing in for MinIO; the bucket is created), an MLflow tracking server
(Postgres backend, artifacts proxied to the bucket) and a Prefect server (on Postgres). For one
machine and for the tests; a team's shared host runs infra/docker-compose.yml instead.

    python infra/servers.py start            # everything, state under infra/.state
    python infra/servers.py start --host 0.0.0.0 --state-dir /srv/deocclude
    python infra/servers.py stop [--state-dir DIR]

Credentials come from the environment, as in infra/.env (POSTGRES_USER, POSTGRES_PASSWORD,
OPTUNA_DB_PASSWORD, S3_ACCESS_KEY, S3_SECRET_KEY, S3_BUCKET), and are generated when absent. Only
the servers' environments and STATE/credentials.env (mode 600) hold them: never a command line, a
printed line or a log. The pipeline needs none of them: MLflow proxies its artifacts.

`start` waits until each server answers, records what it started in STATE/pids.json and prints
the `export` lines that point the pipeline, the CLI and the tests at the servers. Postgres refuses
to run as root: as root it runs as the `postgres` user, so the state folder must be reachable by it.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent
INIT_SCRIPT = Path(__file__).with_name("postgres-init.sh")   # the compose stack's, too
CREDENTIALS = ("POSTGRES_USER", "POSTGRES_PASSWORD", "OPTUNA_DB_PASSWORD", "S3_ACCESS_KEY", "S3_SECRET_KEY", "S3_BUCKET")


def _server_environment(**settings: str) -> dict[str, str]:
    """This environment less the stack's credentials, plus what one server needs."""
    return {**{k: v for k, v in os.environ.items() if k not in CREDENTIALS}, **settings}


def _wait_until_up(url: str, process: subprocess.Popen, log: Path, timeout: float) -> None:
    """Return once `url` answers 200; else stop the server (its whole process group) and exit."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            _kill_group(process.pid)
            raise SystemExit(f"server exited with code {process.returncode}; see {log}:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    _kill_group(process.pid)
    raise SystemExit(f"{url} did not answer within {timeout:.0f} s; see {log}")


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _postgres_bin() -> Path:
    """Debian's newest /usr/lib/postgresql/<major>/bin, or the folder of `initdb` on PATH."""
    if os.environ.get("POSTGRES_BIN"):
        return Path(os.environ["POSTGRES_BIN"])
    folders = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda f: int(Path(f).parent.name))
    if folders:
        return Path(folders[-1])
    initdb = shutil.which("initdb")
    if initdb is None:
        raise SystemExit("Postgres is not installed: run `sh infra/install_postgres.sh` (Debian's postgresql)")
    return Path(initdb).parent


def _run_postgres(command: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """A Postgres program; it refuses to run as root, so root runs it as the `postgres` user."""
    command = ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command
    return subprocess.run(command, cwd="/", capture_output=True, text=True, env=env)


def credentials(state: Path) -> dict[str, str]:
    """The stack's credentials: the environment's, else those of an earlier start, else new ones."""
    saved: dict[str, str] = {}
    file = state / "credentials.env"
    if file.is_file():
        saved = dict(line.split("=", 1) for line in file.read_text().splitlines() if "=" in line)
    defaults = {"POSTGRES_USER": "deocclude", "POSTGRES_PASSWORD": secrets.token_hex(16),
                "OPTUNA_DB_PASSWORD": secrets.token_hex(16),
                "S3_ACCESS_KEY": "deocclude", "S3_SECRET_KEY": secrets.token_hex(20), "S3_BUCKET": "deocclude"}
    chosen = {name: os.environ.get(name) or saved.get(name) or value for name, value in defaults.items()}
    file.touch(mode=0o600)
    file.chmod(0o600)
    file.write_text("".join(f"{name}={value}\n" for name, value in chosen.items()))
    return chosen


def start_postgres(state: Path, host: str, port: int, creds: dict[str, str]) -> dict[str, str]:
    """initdb, pg_ctl start and the databases (as the compose stack's Postgres makes them, the first
    time); returns what `stop` needs."""
    bindir = _postgres_bin()
    home = state / "postgres"
    data, sockets = home / "data", home / "socket"
    sockets.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(home, "postgres", "postgres")
        shutil.chown(sockets, "postgres", "postgres")
        if subprocess.run(["runuser", "-u", "postgres", "--", "test", "-w", str(home)]).returncode != 0:
            raise SystemExit(f"{home}: the postgres user cannot reach it; use a --state-dir outside private folders")
    first_start = not (data / "PG_VERSION").is_file()
    if first_start:
        password_file = home / "password"
        password_file.write_text(creds["POSTGRES_PASSWORD"] + "\n")
        if os.geteuid() == 0:
            shutil.chown(password_file, "postgres", "postgres")
        password_file.chmod(0o600)
        try:
            initialised = _run_postgres([str(bindir / "initdb"), "-D", str(data), "-U", creds["POSTGRES_USER"],
                                         f"--pwfile={password_file}", "--auth-local=trust",
                                         "--auth-host=scram-sha-256", "--encoding=UTF8", "--no-instructions"])
        finally:
            password_file.unlink()
        if initialised.returncode != 0:
            raise SystemExit(f"initdb failed: {initialised.stderr.strip()}")
    log = home / "postgres.log"
    options = f"-c listen_addresses={host} -p {port} -k {sockets}"
    started = _run_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options,
                             "-w", "-t", "60", "start"])
    if started.returncode != 0:
        raise SystemExit(f"postgres did not start: {started.stderr.strip()}; see {log}")
    if first_start:
        environment = _server_environment(PATH=f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}", PGHOST=str(sockets),
                                          PGPORT=str(port), POSTGRES_USER=creds["POSTGRES_USER"],
                                          OPTUNA_DB_PASSWORD=creds["OPTUNA_DB_PASSWORD"])
        for command in ([str(bindir / "createdb"), "-U", creds["POSTGRES_USER"], "mlflow"], ["sh", str(INIT_SCRIPT)]):
            done = _run_postgres(command, environment)
            if done.returncode != 0:
                raise SystemExit(f"{' '.join(command)}: {done.stderr.strip()}")
    return {"pg_ctl": str(bindir / "pg_ctl"), "data": str(data)}


def start_s3(state: Path, host: str, port: int, creds: dict[str, str]) -> subprocess.Popen:
    """moto's S3 in server mode (in memory; it accepts any credentials, which MinIO would check)."""
    import boto3

    log = state / "s3.log"
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)], env=_server_environment(),
                               stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    _wait_until_up(f"http://{_client_host(host)}:{port}/moto-api/", process, log, timeout=60)
    s3 = boto3.client("s3", endpoint_url=f"http://{_client_host(host)}:{port}", region_name="us-east-1",
                      aws_access_key_id=creds["S3_ACCESS_KEY"], aws_secret_access_key=creds["S3_SECRET_KEY"])
    try:
        s3.create_bucket(Bucket=creds["S3_BUCKET"])
    except Exception:
        _kill_group(process.pid)
        raise
    return process


def start_mlflow(state: Path, host: str, port: int, postgres_port: int, s3_url: str,
                 creds: dict[str, str]) -> subprocess.Popen:
    log = state / "mlflow.log"
    env = _server_environment(
        MLFLOW_DISABLE_TELEMETRY="true",
        # Through the environment, not argv: `ps` shows a command line to every user.
        MLFLOW_BACKEND_STORE_URI=(f"postgresql+psycopg://{creds['POSTGRES_USER']}:{creds['POSTGRES_PASSWORD']}"
                                  f"@127.0.0.1:{postgres_port}/mlflow"),
        MLFLOW_S3_ENDPOINT_URL=s3_url, AWS_DEFAULT_REGION="us-east-1",
        AWS_ACCESS_KEY_ID=creds["S3_ACCESS_KEY"], AWS_SECRET_ACCESS_KEY=creds["S3_SECRET_KEY"])
    process = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--host", host, "--port", str(port), "--workers", "1",
         "--serve-artifacts", "--artifacts-destination", f"s3://{creds['S3_BUCKET']}/mlflow"],
        stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True, env=env)
    _wait_until_up(f"http://{_client_host(host)}:{port}/health", process, log, timeout=180)
    return process


def start_prefect(state: Path, host: str, port: int, postgres_port: int, creds: dict[str, str]) -> subprocess.Popen:
    log = state / "prefect.log"
    env = _server_environment(
        PREFECT_HOME=str(state / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_API_DATABASE_CONNECTION_URL=(f"postgresql+asyncpg://{creds['POSTGRES_USER']}:"
                                             f"{creds['POSTGRES_PASSWORD']}@127.0.0.1:{postgres_port}/prefect"))
    env.pop("PREFECT_API_URL", None)
    process = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", host, "--port", str(port)],
                               stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True, env=env)
    _wait_until_up(f"http://{_client_host(host)}:{port}/api/health", process, log, timeout=240)
    return process


def _client_host(host: str) -> str:
    """Where this machine reaches a server bound to `host`."""
    return "127.0.0.1" if host in ("0.0.0.0", "") else host


def _free(host: str, port: int) -> int:
    with socket.socket() as sock:
        if sock.connect_ex((_client_host(host), port)) == 0:
            raise SystemExit(f"port {port} on {host} is taken; choose another with the matching --*-port option")
    return port


def start(args: argparse.Namespace) -> None:
    state = Path(args.state_dir).resolve()
    state.mkdir(parents=True, exist_ok=True)
    creds = credentials(state)
    started: dict = {}
    record = lambda: (state / "pids.json").write_text(json.dumps(started))  # noqa: E731
    try:
        started["postgres"] = start_postgres(state, args.host, _free(args.host, args.postgres_port), creds)
        record()
        started["s3"] = start_s3(state, args.host, _free(args.host, args.s3_port), creds).pid
        record()
        s3_url = f"http://{_client_host(args.host)}:{args.s3_port}"
        started["mlflow"] = start_mlflow(state, args.host, _free(args.host, args.mlflow_port), args.postgres_port,
                                         s3_url, creds).pid
        record()
        started["prefect"] = start_prefect(state, args.host, _free(args.host, args.prefect_port), args.postgres_port,
                                           creds).pid
        record()
    except BaseException:
        stop_started(started)
        (state / "pids.json").unlink(missing_ok=True)
        raise
    host = _client_host(args.host)
    print(f"# servers started; state in {state}; stop with: python infra/servers.py stop --state-dir {state}")
    print(f"export MLFLOW_TRACKING_URI=http://{host}:{args.mlflow_port}")
    print(f"export PREFECT_API_URL=http://{host}:{args.prefect_port}/api")
    print(f"# S3 (DVC remote): endpoint http://{host}:{args.s3_port}, bucket {creds['S3_BUCKET']}; "
          f"Optuna storage: postgresql+psycopg://optuna:OPTUNA_DB_PASSWORD@{host}:{args.postgres_port}/optuna; "
          f"credentials in {state / 'credentials.env'}")


def stop_started(started: dict) -> list[str]:
    """Stop what `start` recorded, the servers before the database they write to."""
    said = []
    for name in ("prefect", "mlflow", "s3"):
        if name in started:
            try:
                os.killpg(started[name], signal.SIGTERM)
                said.append(f"stopped {name} (pid {started[name]})")
            except ProcessLookupError:
                said.append(f"{name} (pid {started[name]}) was not running")
    for name in ("prefect", "mlflow", "s3"):
        deadline = time.monotonic() + 20
        while name in started and time.monotonic() < deadline:
            try:
                os.killpg(started[name], 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            if name in started:
                _kill_group(started[name])
    if "postgres" in started:
        postgres = started["postgres"]
        stopped = _run_postgres([postgres["pg_ctl"], "-D", postgres["data"], "-m", "fast", "-w", "stop"])
        said.append("stopped postgres" if stopped.returncode == 0 else f"postgres: {stopped.stderr.strip()}")
    return said


def stop(args: argparse.Namespace) -> None:
    pids_file = Path(args.state_dir) / "pids.json"
    if not pids_file.is_file():
        raise SystemExit(f"{pids_file}: no servers recorded as started")
    for line in stop_started(json.loads(pids_file.read_text())):
        print(line)
    pids_file.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("start", "stop"))
    parser.add_argument("--state-dir", default=str(Path(__file__).parent / ".state"))
    parser.add_argument("--host", default="127.0.0.1", help="interface the servers listen on (0.0.0.0: every one)")
    parser.add_argument("--mlflow-port", type=int, default=5000)
    parser.add_argument("--prefect-port", type=int, default=4200)
    parser.add_argument("--s3-port", type=int, default=9000)
    parser.add_argument("--postgres-port", type=int, default=5432)
    args = parser.parse_args()
    start(args) if args.command == "start" else stop(args)


if __name__ == "__main__":
    main()
