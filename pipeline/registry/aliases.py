"""Alias moves on a registered model, each recorded (who, when, from, to, why), and the manual
promote and rollback built on them.

Every move is a tag on the registered model, `alias_move.<epoch ns>` holding one JSON record, so
the history lives in the registry itself and is the same on a local store and on a tracking server.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pipeline.registry.gate import CHAMPION

MOVE_TAG_PREFIX = "alias_move."


class PromotionRefused(LookupError):
    """A manual promotion or rollback the registry's records do not allow; the message says why."""


@dataclass(frozen=True)
class AliasMove:
    alias: str
    from_version: str | None
    to_version: str
    who: str
    when: str          # ISO 8601, UTC
    why: str
    kind: str          # register | promote | rollback

    def describe(self) -> str:
        return (f"{self.when}  {self.alias:<10} {self.from_version or '-':>4} -> {self.to_version:<4} "
                f"{self.kind:<8} by {self.who}: {self.why}")


def alias_version(name: str, alias: str) -> str | None:
    try:
        return str(MlflowClient().get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def move_alias(name: str, alias: str, version: str, who: str, why: str, kind: str) -> AliasMove:
    """Point `alias` at `version` and record the move on the registered model."""
    client = MlflowClient()
    previous = alias_version(name, alias)
    client.set_registered_model_alias(name, alias, version)
    stamp = time.time_ns()
    move = AliasMove(alias, previous, str(version), who,
                     datetime.fromtimestamp(stamp / 1e9, timezone.utc).isoformat(timespec="seconds"), why[:2000], kind)
    client.set_registered_model_tag(name, f"{MOVE_TAG_PREFIX}{stamp:020d}", json.dumps(asdict(move)))
    return move


def alias_history(name: str) -> list[AliasMove]:
    """Every recorded alias move of `name`, oldest first."""
    try:
        tags = MlflowClient().get_registered_model(name).tags
    except MlflowException:
        raise LookupError(f"registered model {name!r} not found in the registry") from None
    moves = sorted((key, value) for key, value in tags.items() if key.startswith(MOVE_TAG_PREFIX))
    return [AliasMove(**json.loads(value)) for _, value in moves]


# Set on a champion that a later registration re-scored and found below a floor (the gate replaced it):
# rollback and promote refuse it as they refuse a version that broke a floor when it was registered.
RESCORED_BROKEN_TAG = "gate.rescored_floors_broken"


def _check_floors(name: str, version: str, force: bool) -> None:
    try:
        tags = MlflowClient().get_model_version(name, version).tags
    except MlflowException:
        raise PromotionRefused(f"{name} version {version} not found in the registry") from None
    passed = tags.get("gate.floors_passed")
    if force:
        return
    if passed is None:
        raise PromotionRefused(f"{name} version {version} has no gate record (registered before the gate); "
                               "pass --force to override")
    if passed != "true":
        raise PromotionRefused(f"{name} version {version} broke a floor ({tags.get('gate.floors_broken', '?')}); "
                               "pass --force to override")
    if tags.get(RESCORED_BROKEN_TAG):
        raise PromotionRefused(f"{name} version {version} broke a floor when re-scored later "
                               f"({tags[RESCORED_BROKEN_TAG]}); pass --force to override")


def promote_version(name: str, version: str, who: str, why: str, force: bool = False) -> AliasMove:
    """Make `version` champion by hand; a version that broke a floor only with `force`."""
    _check_floors(name, version, force)
    if alias_version(name, CHAMPION) == str(version):
        raise PromotionRefused(f"{name} version {version} is already {CHAMPION}")
    return move_alias(name, CHAMPION, version, who, why + (" (forced)" if force else ""), "promote")


def rollback_target(moves: list[AliasMove], current: str | None) -> str | None:
    """The champion before `current`: the `from` of the latest move, not itself a rollback, that made
    `current` champion; so successive rollbacks walk back through the champions."""
    for move in reversed(moves):
        if move.alias == CHAMPION and move.to_version == current and move.kind != "rollback":
            return move.from_version
    return None


def rollback(name: str, who: str, why: str, force: bool = False) -> AliasMove:
    """Give `champion` back to the version that held it before the current one."""
    current = alias_version(name, CHAMPION)
    if current is None:
        raise PromotionRefused(f"{name} has no {CHAMPION} to roll back")
    target = rollback_target(alias_history(name), current)
    if target is None:
        raise PromotionRefused(f"{name}: no earlier {CHAMPION} recorded before version {current}")
    try:
        _check_floors(name, target, force)
    except PromotionRefused as refused:
        raise PromotionRefused(f"rollback from version {current} refused: {refused}, or name an earlier version "
                               f"with `deocclude promote VERSION`") from None
    reason = why or f"rollback from version {current}"
    return move_alias(name, CHAMPION, target, who, reason + (" (forced)" if force else ""), "rollback")
