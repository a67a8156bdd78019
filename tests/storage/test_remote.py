"""The DVC remote on a real S3-compatible server (moto's server mode on 127.0.0.1): a full round
trip (push, cache and data wiped, pull, byte-identical), a server that stops mid-push (a clear
failure, an intact cache, a retry that completes and a fresh clone that pulls the same bytes), and
no secret key in any output or file. Changing remote.* reruns resolve_params only."""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from pipeline.data.facts import STATS_FILE   # write-time stats, left out of DVC by .dvcignore
from tests.conftest import BIN, deocclude, make_project, project_env

BUCKET = "deocclude-remote-tests"
REMOTE_URL = f"s3://{BUCKET}/dvc"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class S3Server:
    """moto's S3 server as a process, in memory: a restart loses the bucket and everything in it."""

    port: int
    log: Path
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.url, region_name="us-east-1",
                            aws_access_key_id="moto", aws_secret_access_key="moto")

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()[-2000:]
            try:
                self.client().create_bucket(Bucket=BUCKET)
                return
            except Exception:  # noqa: BLE001 - not listening yet
                time.sleep(0.2)
        raise AssertionError(f"moto server on {self.url} did not start: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
        self.process = None

    def object_count(self) -> int:
        return self.client().list_objects_v2(Bucket=BUCKET).get("KeyCount", 0)


@pytest.fixture
def server(tmp_path: Path):
    s3 = S3Server(free_port(), tmp_path / "moto.log")
    s3.start()
    yield s3
    s3.stop()


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    """A tiny project whose generate stage has run and is committed, remote.url in its params."""
    root = make_project(tmp_path_factory.mktemp("generated") / "project", {"remote": {"url": REMOTE_URL}})
    result = subprocess.run([str(BIN / "dvc"), "repro", "generate"], cwd=root, env=project_env(root),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    commit(root, "generate")
    return root


def commit(root: Path, message: str) -> None:
    for command in (["git", "add", "-A"], ["git", "commit", "-q", "--allow-empty", "-m", message]):
        subprocess.run(command, cwd=root, check=True, capture_output=True)


def dataset_folder(root: Path) -> str:
    """The generate stage's output, as dvc.yaml names it."""
    return yaml.safe_load((root / "dvc.yaml").read_text())["stages"]["generate"]["outs"][0]


def copy_project(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, symlinks=True)
    return target


def remote_env(root: Path, server: S3Server, secret: str) -> dict[str, str]:
    """A teammate's shell: the team's URL from params.yaml, this machine's endpoint and the S3 key
    in the environment, no AWS config file of the user's."""
    env = {k: v for k, v in project_env(root).items() if not k.startswith(("AWS_", "DEOCCLUDE_REMOTE_"))}
    return {**env, "AWS_ACCESS_KEY_ID": "deocclude-tests", "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_CONFIG_FILE": str(root / "no-aws-config"), "AWS_SHARED_CREDENTIALS_FILE": str(root / "no-aws-credentials"),
            "DEOCCLUDE_REMOTE_ENDPOINT_URL": server.url}


def snapshot(root: Path, *folders: str) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for folder in folders
            for path in sorted((root / folder).rglob("*")) if path.is_file() and path.name != STATS_FILE}


def assert_cache_intact(root: Path) -> None:
    """DVC 3's cache is content-addressed (files/md5/ab/cdef...): each file's md5 is its name."""
    cached = [path for path in (root / ".dvc" / "cache" / "files" / "md5").rglob("*") if path.is_file()]
    assert cached
    for path in cached:
        name = path.parent.name + path.name.removesuffix(".dir")
        assert hashlib.md5(path.read_bytes()).hexdigest() == name, f"{path}: corrupt or partial cache file"


def assert_no_secret(secret: str, root: Path, *outputs: str) -> None:
    for output in outputs:
        assert secret not in output
    for path in root.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), f"{path} holds the secret key"


def assert_clean_failure(result: subprocess.CompletedProcess[str], server: S3Server) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    error = result.stderr.strip().splitlines()
    message = "\n".join(error[next(i for i, line in enumerate(error) if line.startswith("deocclude data: error:")):])
    assert REMOTE_URL in message and server.url in message and "storage" in message, result.stderr[-3000:]
    assert "Running it again resumes" in message


def test_push_then_pull_into_a_wiped_cache_and_workspace_gives_the_same_bytes(generated, server, tmp_path):
    root = copy_project(generated, tmp_path / "project")
    secret = f"s3-{secrets.token_hex(16)}"
    env = remote_env(root, server, secret)
    dataset = dataset_folder(root)
    before = snapshot(root, dataset)
    assert len(before) > 200

    pushed = deocclude(root, "data", "push", env=env, timeout=300)
    assert pushed.returncode == 0, pushed.stdout[-3000:] + pushed.stderr[-3000:]
    assert server.object_count() >= len(before) + 1  # every file and the directory's listing
    config = (root / ".dvc" / "config").read_text()
    assert REMOTE_URL in config and server.url not in config  # shared: the team's URL; this machine's endpoint ...
    assert server.url in (root / ".dvc" / "config.local").read_text()  # ... stays local (git-ignored)

    shutil.rmtree(root / ".dvc" / "cache")
    shutil.rmtree(root / dataset)
    pulled = deocclude(root, "data", "pull", env=env, timeout=300)
    assert pulled.returncode == 0, pulled.stdout[-3000:] + pulled.stderr[-3000:]
    assert snapshot(root, dataset) == before
    assert_cache_intact(root)
    status = subprocess.run([str(BIN / "dvc"), "status", "--cloud"], cwd=root, env=env, capture_output=True, text=True)
    assert status.returncode == 0 and "in sync" in status.stdout, status.stdout + status.stderr
    assert_no_secret(secret, root, pushed.stdout, pushed.stderr, pulled.stdout, pulled.stderr)


def test_a_server_that_stops_mid_push_fails_cleanly_and_a_retry_completes(generated, server, tmp_path):
    root = copy_project(generated, tmp_path / "project")
    extra = root / "data" / "extra"
    extra.mkdir()
    for index in range(800):  # enough objects that the push is still going when the server stops
        (extra / f"{index:04d}.bin").write_bytes(os.urandom(2048))
    added = subprocess.run([str(BIN / "dvc"), "add", "data/extra"], cwd=root, env=project_env(root), capture_output=True, text=True)
    assert added.returncode == 0, added.stderr
    commit(root, "extra data")
    before = snapshot(root, dataset_folder(root), "data/extra")
    secret = f"s3-{secrets.token_hex(16)}"
    env = remote_env(root, server, secret)

    push = subprocess.Popen([str(BIN / "deocclude"), "--params", str(root / "params.yaml"), "data", "push", "--jobs", "2"],
                            cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while server.object_count() < 50:
        assert push.poll() is None and time.monotonic() < deadline, "the push ended before the server was stopped"
        time.sleep(0.05)
    server.stop()
    try:
        stdout, stderr = push.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        push.send_signal(signal.SIGKILL)
        raise
    failed = subprocess.CompletedProcess(push.args, push.returncode, stdout, stderr)
    assert_clean_failure(failed, server)
    assert "the remote stopped answering" in stderr and "Connection refused" in stderr
    assert "interrupted by the user" not in stderr
    assert_cache_intact(root)

    server.start()  # a fresh, empty bucket on the same port: the retry has everything to send again
    retried = deocclude(root, "data", "push", env=env, timeout=300)
    assert retried.returncode == 0, retried.stdout[-3000:] + retried.stderr[-3000:]
    status = subprocess.run([str(BIN / "dvc"), "status", "--cloud"], cwd=root, env=env, capture_output=True, text=True)
    assert status.returncode == 0 and "in sync" in status.stdout, status.stdout + status.stderr
    assert_cache_intact(root)
    commit(root, "remote in .dvc/config")

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(root), str(clone)], check=True, capture_output=True)
    clone_env = remote_env(clone, server, secret)
    pulled = deocclude(clone, "data", "pull", env=clone_env, timeout=300)
    assert pulled.returncode == 0, pulled.stdout[-3000:] + pulled.stderr[-3000:]
    assert snapshot(clone, dataset_folder(root), "data/extra") == before
    assert_cache_intact(clone)
    assert_no_secret(secret, root, stdout, stderr, retried.stdout, retried.stderr)
    assert_no_secret(secret, clone, pulled.stdout, pulled.stderr)


def test_changing_the_remote_reruns_resolve_params_only(generated, tmp_path):
    root = copy_project(generated, tmp_path / "project")
    env = project_env(root)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["remote"].update(url="s3://another-bucket/dvc", endpoint_url="http://minio.example:9000", region="eu-west-1")
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = subprocess.run([str(BIN / "dvc"), "status", "--json"], cwd=root, env=env, capture_output=True, text=True)
    assert status.returncode == 0, status.stderr
    stale = {stage for stage in yaml.safe_load(status.stdout) if stage in ("resolve_params", "generate")}
    assert stale == {"resolve_params"}
    repro = subprocess.run([str(BIN / "dvc"), "repro", "generate"], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert repro.returncode == 0, repro.stdout[-3000:] + repro.stderr[-3000:]
    assert "Running stage 'resolve_params'" in repro.stdout
    assert "Stage 'generate' didn't change, skipping" in repro.stdout


def test_no_remote_configured_is_an_error_naming_the_setting(generated, tmp_path):
    root = copy_project(generated, tmp_path / "project")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["remote"]["url"] = ""
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {k: v for k, v in project_env(root).items() if not k.startswith("DEOCCLUDE_REMOTE_")}
    result = deocclude(root, "data", "push", env=env)
    assert result.returncode == 1
    assert "remote.url is empty and DEOCCLUDE_REMOTE_URL is not set" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_team_remote_goes_to_dvc_config_and_this_machines_overrides_to_config_local(tmp_path):
    from dataclasses import replace

    from dvc.config import Config as DvcConfig

    from pipeline.config import RemoteConfig
    from pipeline.storage.remote import configure_remote

    subprocess.run([str(BIN / "dvc"), "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    levels = lambda: {level: DvcConfig(dvc_dir=tmp_path / ".dvc").load_one(level) for level in ("repo", "local")}  # noqa: E731
    team = RemoteConfig(url="s3://team-bucket/dvc", region="eu-west-1")

    in_use = configure_remote(tmp_path, replace(team, overrides={"endpoint_url": "http://127.0.0.1:9000"}))
    assert in_use.endpoint_url == "http://127.0.0.1:9000"
    config = levels()
    assert config["repo"]["core"]["remote"] == "storage"
    assert config["repo"]["remote"]["storage"] == {"url": "s3://team-bucket/dvc", "region": "eu-west-1"}
    assert config["local"]["remote"]["storage"] == {"endpointurl": "http://127.0.0.1:9000"}
    merged = DvcConfig(dvc_dir=tmp_path / ".dvc")["remote"]["storage"]
    assert (merged["url"], merged["endpointurl"], merged["region"]) == ("s3://team-bucket/dvc", "http://127.0.0.1:9000", "eu-west-1")

    configure_remote(tmp_path, team)  # the variable unset: this machine's override is forgotten
    config = levels()
    assert "storage" not in config["local"].get("remote", {})
    assert config["repo"]["remote"]["storage"] == {"url": "s3://team-bucket/dvc", "region": "eu-west-1"}

    configure_remote(tmp_path, RemoteConfig(overrides={"url": "s3://my-bucket/dvc", "endpoint_url": "http://minio:9000"}))
    config = levels()  # no team URL: nothing shared, all of it local
    assert "storage" not in config["repo"].get("remote", {}) and "remote" not in config["repo"].get("core", {})
    assert config["local"]["remote"]["storage"] == {"url": "s3://my-bucket/dvc", "endpointurl": "http://minio:9000"}
    assert config["local"]["core"]["remote"] == "storage"


def test_missing_credentials_fail_with_a_message_saying_where_they_come_from(generated, server, tmp_path):
    root = copy_project(generated, tmp_path / "project")
    env = {k: v for k, v in remote_env(root, server, "unused").items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    result = deocclude(root, "data", "push", env={**env, "AWS_EC2_METADATA_DISABLED": "true"}, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"dvc push with remote storage ({REMOTE_URL} at {server.url}) failed" in result.stderr
    assert "Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE" in result.stderr
    assert server.object_count() == 0


def test_the_repos_dvc_config_sends_no_usage_analytics(tmp_path):
    """A clone's dvc commands start no analytics daemon: the committed .dvc/config says so, whatever the
    environment (the suite's DVC_NO_ANALYTICS left out; user and system configs empty)."""
    from tests.conftest import REPO

    env = {k: v for k, v in os.environ.items() if k not in ("DVC_NO_ANALYTICS", "DVC_TEST")}
    for name in ("DVC_GLOBAL_CONFIG_DIR", "DVC_SYSTEM_CONFIG_DIR"):
        (tmp_path / name).mkdir()
        env[name] = str(tmp_path / name)
    check = ("import dvc.analytics, logging; logging.disable(logging.CRITICAL); "
             "print(dvc.analytics.is_enabled())")
    enabled = lambda cwd: subprocess.run([sys.executable, "-c", check], cwd=cwd, env=env, capture_output=True,  # noqa: E731
                                         text=True, timeout=120, check=True).stdout.strip()
    assert enabled(REPO) == "False"
    (tmp_path / "elsewhere").mkdir()
    assert enabled(tmp_path / "elsewhere") == "True"  # DVC's default, which the repo's config turns off
