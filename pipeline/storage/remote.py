"""The team's DVC remote on S3 (or MinIO): written into DVC's config from params.yaml's `remote:`,
then `dvc push` / `dvc pull`.

params.yaml's values go to the committed `.dvc/config`, so a teammate's plain `dvc pull` finds the
remote; DEOCCLUDE_REMOTE_* overrides (one machine's MinIO address) go to the git-ignored
`.dvc/config.local`. Credentials never pass through here: DVC's S3 client reads AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY, AWS_PROFILE or the AWS config files itself, and the output of DVC is shown
with any secret it might echo blanked out.
"""

from __future__ import annotations

import logging
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import urlsplit

from pipeline.config import PARAMS_FILE, REMOTE_ENV, RemoteConfig
from pipeline.errors import DeoccludeError

logger = logging.getLogger(__name__)

# RemoteConfig field -> the DVC S3 remote option it sets.
DVC_OPTIONS = {"url": "url", "endpoint_url": "endpointurl", "region": "region"}
# Environment values that must never reach a terminal or a log, whatever DVC or botocore print.
SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")
# DVC's account of a failure: its ERROR line and what follows, up to its support footer.
DVC_ERROR = re.compile(r"^ERROR: (.+?)\s*(?:^Having any troubles\?.*)?\Z", re.MULTILINE | re.DOTALL)
MAX_ERROR_LINES = 12
# A remote that answered, then refused connections this long, is down: S3 clients retry each file for
# seconds, and DVC would go through every remaining file so before it gave up.
GIVE_UP_AFTER = 10.0
PROBE_SECONDS = 1.0


class RemoteError(DeoccludeError):
    """No remote configured, or a push or pull that did not complete; the message names the remote."""


def describe(remote: RemoteConfig) -> str:
    """`storage (s3://bucket/prefix at http://minio:9000)`: the remote as a message names it."""
    where = f" at {remote.endpoint_url}" if remote.endpoint_url else ""
    return f"{remote.name} ({remote.url}{where})"


def _dvc_section(remote: RemoteConfig, fields: Iterable[str]) -> dict[str, str]:
    return {DVC_OPTIONS[name]: getattr(remote, name) for name in fields if getattr(remote, name)}


def configure_remote(root: Path, remote: RemoteConfig) -> RemoteConfig:
    """Make `remote` the project's default DVC remote; return the remote in use on this machine.

    .dvc/config gets params.yaml's values (committed: the team's remote); .dvc/config.local gets
    the environment's overrides, and loses the ones no longer set."""
    from dvc.config import Config as DvcConfig
    from dvc.config import ConfigError as DvcConfigError

    in_use = remote.in_use()
    if not in_use.url:
        raise RemoteError(f"{root / PARAMS_FILE}: remote.url is empty and {REMOTE_ENV['url']} is not set: "
                          "no DVC remote to use (e.g. remote.url: s3://bucket/prefix)")
    if not (root / ".dvc").is_dir():
        raise RemoteError(f"{root}: not a DVC project (no .dvc folder); run `dvc init` first")
    config = DvcConfig(dvc_dir=root / ".dvc")
    try:
        # Local first: a partial local section left over the shared one it no longer matches is invalid.
        if (root / ".dvc" / DvcConfig.CONFIG_LOCAL).is_file():
            with config.edit("local") as local:
                _forget(local, remote.name)
        with config.edit("repo") as shared:
            _forget(shared, remote.name)
            if remote.url:
                shared["remote"][remote.name] = _dvc_section(remote, DVC_OPTIONS)
                shared["core"]["remote"] = remote.name
        if remote.overrides:
            with config.edit("local") as local:
                # Without params.yaml's URL there is no shared section to lay the overrides over.
                fields = remote.overrides if remote.url else DVC_OPTIONS
                local["remote"][remote.name] = _dvc_section(in_use, fields)
                local["core"]["remote"] = remote.name
    except DvcConfigError as error:
        raise RemoteError(f"{root / '.dvc' / 'config'}: cannot set remote {describe(in_use)}: {error}") from None
    logger.info("DVC remote: %s%s", describe(in_use),
                f" ({', '.join(REMOTE_ENV[key] for key in remote.overrides)} in .dvc/config.local)" if remote.overrides else "")
    return in_use


def _forget(level: dict, name: str) -> None:
    level.setdefault("remote", {}).pop(name, None)
    core = level.setdefault("core", {})
    if core.get("remote") == name:
        del core["remote"]


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def run_dvc(root: Path, remote: RemoteConfig, command: str, arguments: list[str], env: Mapping[str, str]) -> str:
    """`dvc COMMAND -r REMOTE ARGUMENTS` in `root`, its output passed on with secrets blanked; the
    output on success, a RemoteError naming the remote (never a credential) on failure.

    DVC goes on with every remaining file when the server goes away, each after its client's
    retries (seconds per file, an hour for a data set); a remote that answered and then refuses
    connections for GIVE_UP_AFTER seconds stops the transfer here instead."""
    secrets = [env[name] for name in SECRET_VARIABLES if len(env.get(name) or "") >= 4]
    child_env = dict(env)
    if sys.stderr.isatty():
        child_env["DVC_IGNORE_ISATTY"] = "true"  # DVC's progress bars, though its output is piped through here
    process = subprocess.Popen([sys.executable, "-m", "dvc", command, "-r", remote.name, *arguments], cwd=root,
                               env=child_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    shown: list[str] = []
    interrupted = threading.Event()  # DVC's "interrupted by the user" would misstate why
    reader = threading.Thread(target=_pass_through, args=(process, secrets, shown, interrupted), daemon=True)
    reader.start()
    lost = _watch(process, remote, interrupted)
    reader.join()
    output = "".join(shown)
    again = "Running it again resumes: what was already transferred is skipped, and the cache is untouched."
    if lost:
        raise RemoteError(f"dvc {command} with remote {describe(remote)} stopped: the remote stopped answering "
                          f"({lost}) for {GIVE_UP_AFTER:.0f} s.\n{again}")
    if process.returncode != 0:
        error = DVC_ERROR.search(output)
        lines = (error.group(1) if error else output.strip() or "no output").splitlines()
        reason = "\n".join(lines[:MAX_ERROR_LINES] + ([f"... ({len(lines) - MAX_ERROR_LINES} more lines)"]
                                                      if len(lines) > MAX_ERROR_LINES else []))
        if "Unable to locate credentials" in reason or "InvalidAccessKeyId" in reason or "SignatureDoesNotMatch" in reason:
            again = ("Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or ~/.aws/credentials) for it "
                     "in the environment, then run it again.")
        raise RemoteError(f"dvc {command} with remote {describe(remote)} failed (exit {process.returncode}): "
                          f"{reason}\n{again}")
    return output


def _endpoint_address(remote: RemoteConfig) -> tuple[str, int]:
    if remote.endpoint_url:
        endpoint = urlsplit(remote.endpoint_url)
        return endpoint.hostname or "", endpoint.port or (443 if endpoint.scheme == "https" else 80)
    return (f"s3.{remote.region}.amazonaws.com" if remote.region else "s3.amazonaws.com"), 443


def _probe(address: tuple[str, int]) -> str | None:
    """None when the remote's host accepts a connection, else why not."""
    try:
        socket.create_connection(address, timeout=PROBE_SECONDS).close()
        return None
    except OSError as error:
        return f"{address[0]}:{address[1]}: {error.strerror or error}"


def _watch(process: subprocess.Popen, remote: RemoteConfig, interrupted: threading.Event) -> str | None:
    """Wait for `process`; interrupt it, and say why, once the remote has answered and then refused
    connections for GIVE_UP_AFTER seconds. A remote never reached (through a proxy, say) is left
    to DVC's own errors."""
    address = _endpoint_address(remote)
    answered, failing_since = False, None
    while True:
        try:
            process.wait(timeout=PROBE_SECONDS)
            return None
        except subprocess.TimeoutExpired:
            pass
        problem = _probe(address)
        if problem is None:
            answered, failing_since = True, None
            continue
        failing_since = failing_since or time.monotonic()
        if answered and time.monotonic() - failing_since >= GIVE_UP_AFTER:
            logger.warning("remote %s: %s for %.0f s; stopping DVC", remote.name, problem, GIVE_UP_AFTER)
            interrupted.set()
            _interrupt(process)
            return problem


def _interrupt(process: subprocess.Popen) -> None:
    """Ctrl-C for DVC (it stops its transfers and cleans up), then a kill if it does not exit."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _pass_through(process: subprocess.Popen, secrets: list[str], shown: list[str], interrupted: threading.Event) -> None:
    """Copy the child's output to our stderr as it comes (until we interrupt it), a line or
    progress-bar frame at a time, so a secret is never split across two writes; keep all of it,
    redacted, in `shown`."""
    pending = b""
    assert process.stdout is not None
    while chunk := process.stdout.read1(65536):
        pending += chunk
        *complete, pending = re.split(rb"(?<=[\r\n])", pending)
        _show(b"".join(complete), secrets, shown, interrupted)
    _show(pending, secrets, shown, interrupted)


def _show(data: bytes, secrets: list[str], shown: list[str], interrupted: threading.Event) -> None:
    text = redact(data.decode(errors="replace"), secrets)
    if text and not interrupted.is_set():
        sys.stderr.write(text)
        sys.stderr.flush()
    shown.append(text)


def recorded_targets(root: Path) -> list[str]:
    """The stages (and .dvc files) whose cached outputs DVC has recorded: what a push sends and a
    pull restores. A stage that has not run yet has nothing to transfer, and is not an error."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return [stage.addressing for stage in repo.index.stages
                if any(out.use_cache and out.hash_info for out in stage.outs)]


def push(root: Path, remote: RemoteConfig, env: Mapping[str, str], targets: list[str] | None = None,
         run_cache: bool = False, jobs: int | None = None) -> str:
    """Configure the remote, then push the outputs dvc.lock and .dvc files record (or `targets`) to it."""
    return _transfer("push", root, remote, env, targets, run_cache, jobs)


def pull(root: Path, remote: RemoteConfig, env: Mapping[str, str], targets: list[str] | None = None,
         run_cache: bool = False, jobs: int | None = None) -> str:
    """Configure the remote, then fetch the recorded outputs (or `targets`) and check them out."""
    return _transfer("pull", root, remote, env, targets, run_cache, jobs)


def _transfer(command: str, root: Path, remote: RemoteConfig, env: Mapping[str, str], targets: list[str] | None,
              run_cache: bool, jobs: int | None) -> str:
    in_use = configure_remote(root, remote)
    targets = list(targets or recorded_targets(root))
    if not targets and not run_cache:
        raise RemoteError(f"{root}: nothing to {command}: no stage in dvc.lock and no .dvc file records a cached "
                          "output yet (run the pipeline, or `dvc add` the data, first)")
    options = (["--run-cache"] if run_cache else []) + (["--jobs", str(jobs)] if jobs else [])
    return run_dvc(root, in_use, command, options + targets, env)
