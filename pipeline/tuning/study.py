"""A study that several workers share through one storage (sqlite, Postgres) and that survives kills.

The study holds its requested number of trials as WAITING slots from the start; workers claim them
one at a time (a claim is an atomic WAITING -> RUNNING update in the database), so however many
workers run and however often one is restarted, the study ends with exactly that many finished
trials, numbered 0..N-1 when nothing fails. A trial whose worker died is failed and queued again
with the same values: at once when the worker ran on this host (its process is gone), through
Optuna's heartbeat otherwise.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import optuna
import sqlalchemy.exc
from optuna.exceptions import DuplicatedStudyError, ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from pipeline.errors import DeoccludeError

logger = logging.getLogger(__name__)

# Trial system attribute: which process runs it, so a dead one on this host is noticed at once.
WORKER_ATTR = "worker"
# Study user attribute set once the creator has queued the slots and run `on_create`.
INITIALISED_ATTR = "initialised"
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)


def masked_url(url: str) -> str:
    """The URL with its password replaced by ***, for logs and MLflow."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def open_storage(url: str, heartbeat_seconds: int, max_retries: int) -> RDBStorage:
    """Optuna's database storage with heartbeats: a trial silent for twice `heartbeat_seconds` is
    failed and queued again (at most `max_retries` times)."""
    # sqlite serialises writers; several workers wait for the lock rather than fail at once.
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}

    def connect() -> RDBStorage:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            return RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_seconds,
                              grace_period=2 * heartbeat_seconds,
                              heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=max_retries))

    for attempt in range(4):
        try:
            return connect()
        except sqlalchemy.exc.DBAPIError:
            # Workers started together on an empty database race to create Optuna's tables (Postgres:
            # `duplicate key ... pg_type_typname_nsp_index`); the loser finds them made on its next try.
            time.sleep(0.5 + attempt)
    return connect()


def open_study(storage: RDBStorage, name: str, direction: str, sampler: optuna.samplers.BaseSampler,
               pruner: optuna.pruners.BasePruner, trials: int, on_create: Callable[[], dict[str, Any]],
               wait_seconds: float = 120.0) -> optuna.Study:
    """Create the study with `trials` slots and the user attributes `on_create` returns, or load it
    when it exists (another worker, or this one before a restart) and wait for its creator to
    finish that. A study asked for more trials than it holds gets more slots."""
    try:
        study = optuna.create_study(storage=storage, study_name=name, direction=direction, sampler=sampler, pruner=pruner)
    except DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
        if study.direction.name.lower() != direction:
            raise DeoccludeError(f"study {name} exists with direction {study.direction.name.lower()}, not {direction}; "
                                 "join it with the metric it optimises, or name another study") from None
        deadline = time.monotonic() + wait_seconds
        while INITIALISED_ATTR not in study.user_attrs and time.monotonic() < deadline:
            time.sleep(0.5)
        if INITIALISED_ATTR in study.user_attrs:
            add_slots(study, trials)
            return study
        logger.warning("study %s: its creator did not finish setting it up in %.0f s; finishing it here", name, wait_seconds)
    add_slots(study, trials)
    for key, value in on_create().items():
        study.set_user_attr(key, value)
    study.set_user_attr(INITIALISED_ATTR, True)
    return study


def add_slots(study: optuna.Study, trials: int) -> None:
    """Queue WAITING trials until the study holds `trials` that are not retries of others."""
    originals = sum("failed_trial" not in trial.system_attrs for trial in study.get_trials(deepcopy=False))
    for _ in range(trials - originals):
        study.enqueue_trial({})


@dataclass(frozen=True)
class TrialCounts:
    complete: int
    pruned: int
    failed: int
    running: int
    waiting: int

    @property
    def finished(self) -> int:
        return self.complete + self.pruned


def count_trials(study: optuna.Study) -> TrialCounts:
    states = [trial.state for trial in study.get_trials(deepcopy=False)]
    return TrialCounts(*(states.count(state) for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL,
                                                           TrialState.RUNNING, TrialState.WAITING)))


def this_worker() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_and_requeue(study: optuna.Study, storage: RDBStorage, trial: FrozenTrial, max_retries: int) -> bool:
    """Mark a trial FAIL and queue a copy with the same values; False if another worker got there first."""
    try:
        if not storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
            return False
    except UpdateFinishedTrialError:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        RetryHeartbeatStaleTrialCallback(max_retry=max_retries)(study, storage.get_trial(trial._trial_id))
    return True


def recover_abandoned(study: optuna.Study, storage: RDBStorage, max_retries: int) -> list[FrozenTrial]:
    """Fail and queue again the RUNNING trials whose worker ran on this host and is gone (killed), then
    those whose heartbeat went silent (a worker elsewhere). Returns the ones recovered here."""
    me = this_worker()
    recovered = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.system_attrs.get(WORKER_ATTR) or {}
        if worker.get("host") == me["host"] and worker.get("pid") != me["pid"] and not _process_alive(int(worker["pid"])):
            if fail_and_requeue(study, storage, trial, max_retries):
                logger.warning("trial %d: its worker (pid %s) is gone; failed and queued again", trial.number, worker["pid"])
                recovered.append(trial)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    return recovered


def claim_trial(study: optuna.Study, storage: RDBStorage, trials: int) -> optuna.Trial | None:
    """A WAITING trial of the study, now RUNNING in this worker; None when the study has as many
    trials finished or running as asked for, or none waiting."""
    counts = count_trials(study)
    if counts.finished + counts.running >= trials:
        return None
    waiting = sorted(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)), key=lambda trial: trial.number)
    for trial in waiting:
        try:
            if not storage.set_trial_state_values(trial._trial_id, TrialState.RUNNING):
                continue  # another worker claimed it first
        except UpdateFinishedTrialError:
            continue
        storage.set_trial_system_attr(trial._trial_id, WORKER_ATTR, this_worker())
        return optuna.Trial(study, trial._trial_id)
    return None


@contextmanager
def heartbeat(storage: RDBStorage, trial_id: int) -> Iterator[None]:
    """Record the trial's heartbeat every interval while the body runs."""
    stop = threading.Event()
    interval = storage.get_heartbeat_interval() or 60

    def beat() -> None:
        while True:
            storage.record_heartbeat(trial_id)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name=f"optuna-heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def run_worker(study: optuna.Study, storage: RDBStorage, objective: Callable[[optuna.Trial], float], trials: int,
               max_retries: int, on_recovered: Callable[[FrozenTrial], None] = lambda trial: None,
               poll_seconds: float = 2.0) -> int:
    """Run the study's trials until it has `trials` finished (complete or pruned) and none running
    anywhere, recovering abandoned ones on the way. A trial that raises is failed, queued again and
    the error re-raised. Returns how many trials this worker ran."""
    ran = 0
    while True:
        for trial in recover_abandoned(study, storage, max_retries):
            on_recovered(trial)
        trial = claim_trial(study, storage, trials)
        if trial is None:
            counts = count_trials(study)
            if counts.running == 0 and (counts.waiting == 0 or counts.finished >= trials):
                return ran
            time.sleep(poll_seconds)  # other workers' trials may still fail and come back
            continue
        with heartbeat(storage, trial._trial_id):
            try:
                value = objective(trial)
            except optuna.TrialPruned:
                study.tell(trial, state=TrialState.PRUNED)
            except BaseException:
                failed = study.tell(trial, state=TrialState.FAIL)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ExperimentalWarning)
                    RetryHeartbeatStaleTrialCallback(max_retry=max_retries)(study, failed)
                raise
            else:
                study.tell(trial, value)
        ran += 1
