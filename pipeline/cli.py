"""`deocclude <command>`: the pipeline stages dvc.yaml runs, the whole pipeline (Prefect flow or
`dvc repro` under one MLflow parent run), the model list, the dvc.yaml check, predict, and the
registry's promote, rollback, history, comparison and reproduction."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.config import PARAMS_FILE, RESOLVED_PARAMS_FILE, ConfigError, load_config, resolved_params_text
from pipeline.errors import DeoccludeError
from pipeline.stages import STAGES, command_name

logger = logging.getLogger("deocclude")

EXIT_FAILURE, EXIT_BAD_INPUT = 1, 2


class BadInput(DeoccludeError):
    """An input file the user named cannot be used; the message names it."""


def _check_resolved_params(params: Path) -> None:
    """DVC records a stage's params from params.resolved.yaml: refuse to run on values it did not see."""
    resolved = params.resolve().parent / RESOLVED_PARAMS_FILE
    if resolved.is_file() and resolved.read_text() != resolved_params_text(params):
        raise ConfigError(f"{resolved}: out of date with {params.name}; run `dvc repro resolve_params` "
                          "(or the whole pipeline) so DVC tracks the values this stage would use")


def _run_stage(stage: str) -> Callable[[argparse.Namespace], int]:
    def command(args: argparse.Namespace) -> int:
        import importlib

        if stage != "resolve_params":
            _check_resolved_params(Path(args.params))
        stage_module = importlib.import_module(f"pipeline.stages.{stage}")
        quiet_libraries()  # after the import: some libraries set their loggers' levels when imported
        if stage == "hpo":
            cfg, study = _hpo_options(load_config(args.params), args)
            stage_module.run(cfg, study=study)
        else:
            stage_module.run(load_config(args.params))
        return 0

    return command


def _hpo_options(cfg: Any, args: argparse.Namespace) -> tuple[Any, str | None]:
    """The config with `deocclude hpo`'s options over hpo's params (another worker joining a study)."""
    from dataclasses import replace

    from pipeline.config import optuna_storage_url

    overrides: dict[str, Any] = {}
    if args.random_trials is not None:
        overrides["random_trials"] = args.random_trials
    if args.tpe_trials is not None:
        overrides["tpe_trials"] = args.tpe_trials
    if args.storage:
        overrides["storage"] = optuna_storage_url(args.storage, cfg.root)
    return replace(cfg, hpo=replace(cfg.hpo, **overrides)), args.study


def _trial_count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"a number of trials >= 0, got {text!r}")
    return int(text)


def _hpo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--random-trials", type=_trial_count, help="random trials (default: hpo.random_trials)")
    parser.add_argument("--tpe-trials", type=_trial_count, help="TPE trials after them (default: hpo.tpe_trials)")
    parser.add_argument("--storage", help="Optuna storage URL, e.g. postgresql://user@host/db (default: "
                                          "$DEOCCLUDE_OPTUNA_STORAGE, else hpo.storage); a password is safer in the variable")
    parser.add_argument("--study", help="study to join (default: hpo.study and a hash of the search, as the first worker logs)")


def _dvc_sync(args: argparse.Namespace) -> int:
    from pipeline.stages.code_deps import sync_dvc_yaml

    root = Path(args.params).resolve().parent
    problems = sync_dvc_yaml(root, write=not args.check)
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print(f"{root / 'dvc.yaml'}: stages and code deps match the code")
    return EXIT_FAILURE if problems else 0


def _repro(args: argparse.Namespace) -> int:
    """`dvc repro` under one MLflow parent run, with this interpreter running the stages."""
    import subprocess

    from pipeline.config import PARENT_RUN_ENV
    from pipeline.stages.common import pipeline_execution

    cfg = load_config(args.params)
    with pipeline_execution(cfg, "dvc") as (run_id, _):
        env = {**os.environ, PARENT_RUN_ENV: run_id, "DEOCCLUDE_PYTHON": sys.executable}
        result = subprocess.run([sys.executable, "-m", "dvc", "repro", *args.dvc_args], cwd=cfg.root, env=env)
        if result.returncode != 0:
            raise DeoccludeError(f"dvc repro failed (exit {result.returncode}); the failing stage is named above")
    return 0


def _list_models(args: argparse.Namespace) -> int:
    from pipeline.models.registry import count_parameters, list_models

    print(f"{'name':<22} {'task':<13} {'parameters':>12}  description")
    for entry in list_models():
        print(f"{entry.name:<22} {entry.task:<13} {count_parameters(entry.builder()):>12,}  {entry.description}")
    return 0


def _prefect_terminal() -> None:
    """Before Prefect is imported: its terminal output (flows/logging.yml), and no telemetry, whose
    heartbeat races the ephemeral server's sqlite database and prints a traceback."""
    import flows

    os.environ.setdefault("PREFECT_LOGGING_SETTINGS_PATH", str(Path(flows.__file__).parent / "logging.yml"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from flows.console import EngineChatterFilter

    for handler in logging.getLogger().handlers:  # Prefect keeps our terminal handler; it drops its chatter
        handler.addFilter(EngineChatterFilter())


def _run_flow(args: argparse.Namespace) -> int:
    _prefect_terminal()
    from flows.pipeline_flow import StageFailed, deocclude_pipeline

    try:
        summary = deocclude_pipeline(project_dir=str(Path(args.params).resolve().parent))
    except StageFailed as error:
        print(f"deocclude run: error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    _print_run_summary(args, summary)
    return 0


def _print_run_summary(args: argparse.Namespace, summary: dict[str, Any]) -> None:
    print(f"Stages run: {', '.join(summary['stages_run']) or 'none (everything up to date)'}")
    print(f"Evaluation report: {summary['report']}")
    if summary["champion_version"] is None:
        print(f"Champion: none; this run's version {summary['version']} is {summary['alias']}")
    else:
        value = summary["champion_value"]
        shown = f" ({summary['metric']} = {value:.3f})" if isinstance(value, (int, float)) else ""
        print(f"Champion: models:/deocclusion@champion is version {summary['champion_version']}{shown}; "
              f"this run's version {summary['version']} is {summary['alias']}")
    registration = Path(args.params).resolve().parent / "reports" / "registration.json"
    if registration.is_file():
        import json

        gate = json.loads(registration.read_text()).get("gate") or {}
        if gate.get("reason"):
            print(f"Gate: {gate['reason']}")
    print(f"Tracking store: {summary['tracking_uri']}")


def _parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`--set inpainter.epochs=3` pairs; values read as YAML (3 is a number, [1, 2] a list)."""
    import yaml

    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator or not key:
            raise ConfigError(f"--set {pair}: expected KEY=VALUE, e.g. inpainter.epochs=3")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


def _retrain(args: argparse.Namespace) -> int:
    _prefect_terminal()
    from flows.pipeline_flow import StageFailed
    from flows.retrain import deocclude_retrain

    try:
        result = deocclude_retrain(project_dir=str(Path(args.params).resolve().parent), profile=args.profile,
                                   overrides=_parse_overrides(args.set), force=args.force)
    except StageFailed as error:
        print(f"deocclude retrain: error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    if result["retrained"]:  # the flow's log has said why, either way
        _print_run_summary(args, result)
    return 0


def _serve_deployments(args: argparse.Namespace) -> int:
    _prefect_terminal()
    from flows.deployments import serve_deployments

    serve_deployments(Path(args.params).resolve().parent, schedules=not args.no_schedules, limit=args.limit)
    return 0


def read_input_image(path: Path) -> Any:
    """Decode an input image fully; any problem is a BadInput naming the file."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    if not path.exists():
        raise BadInput(f"{path}: file not found")
    if not path.is_file():
        raise BadInput(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise BadInput(f"{path}: file is empty")
    try:
        with Image.open(path) as image:
            image.load()
            return np.asarray(image.convert("RGB"))
    except UnidentifiedImageError:
        raise BadInput(f"{path}: not a recognised image format") from None
    except (OSError, ValueError, SyntaxError) as error:
        raise BadInput(f"{path}: unreadable or truncated image ({error})") from None


def _write_png_atomically(array: Any, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    Image.fromarray(array).save(partial, format="PNG")
    os.replace(partial, path)


def _configure_registry(params: Path, what: str) -> None:
    """Point MLflow at the project's store (MLFLOW_TRACKING_URI wins), or fail saying why there is none."""
    from pipeline.registry.tracking import configure_tracking

    if params.is_file():
        configure_tracking(load_config(params).registry)
    elif not os.environ.get("MLFLOW_TRACKING_URI"):
        raise ConfigError(f"{params}: not found, and MLFLOW_TRACKING_URI is not set: no model registry to {what} "
                          "(run in the project directory or pass --params)")


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def _reference_params(args: argparse.Namespace) -> dict[str, Any] | None:
    """The pyfunc's params for `--reference` files (None without any): the references, each read
    in full (a bad one is a BadInput naming it), and params.yaml's `reference:` settings."""
    if not args.reference:
        return None
    import json
    from dataclasses import asdict

    from pipeline.config import ReferenceConfig
    from pipeline.registry.mlflow_models import encode_png

    references = [encode_png(read_input_image(Path(path))) for path in args.reference]
    params = Path(args.params)
    settings = load_config(params).reference if params.is_file() else ReferenceConfig()
    return {"references": references, "reference_config": json.dumps(asdict(settings))}


def _load_predict_model(args: argparse.Namespace) -> Any:
    """The `deocclusion` pyfunc at args.model; with --reference it must take the `references` param."""
    from pipeline.registry.mlflow_models import load_deocclusion

    model = load_deocclusion(args.model)
    schema = model.metadata.get_params_schema()
    if args.reference and (schema is None or "references" not in {param.name for param in schema.params}):
        raise DeoccludeError(f"{args.model}: this version was logged before reference-guided predict and takes no "
                             "`references` param; register a newer version to use --reference")
    return model


def _predict(args: argparse.Namespace) -> int:
    source = Path(args.input)
    if source.is_dir():
        return _predict_directory(args, source)
    image = read_input_image(source)
    for output in (args.output, args.mask_out):
        if output and Path(output).suffix.lower() != ".png":
            raise BadInput(f"{output}: output must be a .png file")
    import pandas as pd

    from pipeline.registry.mlflow_models import decode_image, encode_png, load_deocclusion

    reference_params = _reference_params(args)
    _configure_registry(Path(args.params), f"load {args.model} from")
    model = _load_predict_model(args)
    result = model.predict(pd.DataFrame({"image": [encode_png(image)]}), params=reference_params)
    _write_png_atomically(decode_image(result["image"][0]), Path(args.output))
    if args.mask_out:
        import numpy as np

        _write_png_atomically(np.asarray(decode_image(result["mask"][0]))[..., 0], Path(args.mask_out))
    print(f"wrote {args.output}" + (f" and {args.mask_out}" if args.mask_out else ""))
    return 0


def _predict_directory(args: argparse.Namespace, source: Path) -> int:
    """Every file in `source` (not recursive): OUTDIR/<stem>.png and OUTDIR/<stem>_mask.png; a bad
    file is reported with the reason and skipped; exit 2 when any failed."""
    import numpy as np
    import pandas as pd
    from tqdm import tqdm

    from pipeline.registry.mlflow_models import decode_image, encode_png

    output = Path(args.output)
    if output.exists() and not output.is_dir():
        raise BadInput(f"{output}: must be a directory when the input is one")
    files = sorted(path for path in source.iterdir() if not path.name.startswith("."))
    if not files:
        raise BadInput(f"{source}: no files to de-occlude")
    reference_params = _reference_params(args)
    _configure_registry(Path(args.params), f"load {args.model} from")
    model = _load_predict_model(args)
    failures: list[str] = []
    written = 0
    for path in tqdm(files, desc="de-occluding", unit="image", file=sys.stderr, disable=None):
        try:
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                raise BadInput(f"{path}: not an image file name (expected one of {', '.join(IMAGE_SUFFIXES)})")
            image = read_input_image(path)
            result = model.predict(pd.DataFrame({"image": [encode_png(image)]}), params=reference_params)
            _write_png_atomically(decode_image(result["image"][0]), output / f"{path.stem}.png")
            _write_png_atomically(np.asarray(decode_image(result["mask"][0]))[..., 0], output / f"{path.stem}_mask.png")
            written += 1
        except BadInput as error:
            failures.append(str(error))
        except Exception as error:  # noqa: BLE001 - one bad image must not stop the others; its reason is reported
            failures.append(f"{path}: {type(error).__name__}: {error}")
    print(f"wrote {written} of {len(files)} images to {output}")
    for failure in failures:
        print(f"deocclude predict: skipped {failure}", file=sys.stderr)
    return EXIT_BAD_INPUT if failures else 0


def _who() -> str:
    import getpass
    import socket

    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"
    except (KeyError, OSError):
        return "unknown"


def _promote(args: argparse.Namespace) -> int:
    from pipeline.registry.aliases import promote_version
    from pipeline.registry.mlflow_models import DEOCCLUSION_MODEL

    _configure_registry(Path(args.params), "promote in")
    move = promote_version(DEOCCLUSION_MODEL, args.version, _who(), args.reason, force=args.force)
    print(f"{DEOCCLUSION_MODEL}: champion {move.from_version or 'none'} -> {move.to_version} ({move.why})")
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from pipeline.registry.aliases import rollback
    from pipeline.registry.mlflow_models import DEOCCLUSION_MODEL

    _configure_registry(Path(args.params), "roll back in")
    move = rollback(DEOCCLUSION_MODEL, _who(), args.reason, force=args.force)
    print(f"{DEOCCLUSION_MODEL}: champion {move.from_version} -> {move.to_version} (rollback: {move.why})")
    return 0


def _history(args: argparse.Namespace) -> int:
    from pipeline.registry.aliases import alias_history
    from pipeline.registry.mlflow_models import DEOCCLUSION_MODEL

    _configure_registry(Path(args.params), "read")
    moves = alias_history(DEOCCLUSION_MODEL)
    print(f"{'when (UTC)':<25} {'alias':<10} {'from':>4} -> {'to':<4} {'kind':<8} who: why")
    for move in moves:
        print(move.describe())
    if not moves:
        print(f"{DEOCCLUSION_MODEL}: no alias move recorded")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from pipeline.registry.compare import compare_refs

    _configure_registry(Path(args.params), "compare runs from")
    html_path = Path(args.html) if args.html else Path(args.params).resolve().parent / "reports" / "compare.html"
    text, _ = compare_refs(args.refs, html_path)
    print(text)
    print(f"\nHTML: {html_path}")
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    """Restore a version's params, rerun the pipeline, and check data version and metrics against it."""
    from pipeline.registry.reproduce import check_reproduction, restore_params

    params = Path(args.params).resolve()
    _configure_registry(params, f"read {args.model} from")
    recorded = restore_params(args.model, params)
    print(f"{params}: restored from {args.model} (recorded commit {recorded.git_commit}, data {recorded.data_version})")
    repro_args = argparse.Namespace(params=str(params), dvc_args=[] if args.no_force else ["--force"])
    _repro(repro_args)
    import json

    from pipeline.stages.common import Paths, data_version, git_commit

    paths = Paths(params.parent)
    metrics = json.loads((paths.evaluation / "metrics.json").read_text())
    report = check_reproduction(recorded, metrics, data_version(paths.root, paths.dataset), git_commit(paths.root))
    print(report.text)
    return 0 if report.identical else EXIT_FAILURE


def _data_remote(args: argparse.Namespace) -> int:
    from pipeline.storage.remote import configure_remote

    cfg = load_config(args.params)
    configure_remote(cfg.root, cfg.remote)  # it logs the remote, and where the environment's values went
    return 0


def _data_transfer(direction: str) -> Callable[[argparse.Namespace], int]:
    def command(args: argparse.Namespace) -> int:
        from pipeline.storage import remote

        cfg = load_config(args.params)
        transfer = remote.push if direction == "push" else remote.pull
        transfer(cfg.root, cfg.remote, env=dict(os.environ), targets=args.targets, run_cache=args.run_cache, jobs=args.jobs)
        print(f"{direction}: done with remote {remote.describe(cfg.remote.in_use())}")
        return 0

    return command


def _remote_commands(data_commands: Any) -> None:
    """`deocclude data remote | push | pull`: the DVC remote from params.yaml's `remote:`."""
    data_commands.add_parser("remote", help="make params.yaml's remote (DEOCCLUDE_REMOTE_* over it) DVC's default"
                             ).set_defaults(handler=_data_remote)
    for direction, what in (("push", "send the DVC-tracked data and models to the remote"),
                            ("pull", "fetch the DVC-tracked data and models from the remote and check them out")):
        transfer = data_commands.add_parser(direction, help=f"{what} (configures the remote first)")
        transfer.add_argument("targets", nargs="*", help="stages or outputs (default: everything dvc.lock records)")
        transfer.add_argument("--run-cache", action="store_true", help="also the run cache, so `dvc repro` elsewhere "
                                                                       "can restore stages instead of rerunning them")
        transfer.add_argument("-j", "--jobs", type=int, help="parallel transfers (default: DVC's)")
        transfer.set_defaults(handler=_data_transfer(direction))


def _data_ingest(args: argparse.Namespace) -> int:
    from pipeline.ingest.ingest import ingest, layout_options, settings_from
    from pipeline.ingest.versions import track_with_dvc
    from pipeline.stages.common import Paths

    cfg = load_config(args.params)
    source = Path(args.source)
    name = args.name or source.resolve().name
    options = {**layout_options(source, args.kind),
               **{key: Path(value) for key, value in (("cutouts_dir", args.cutouts), ("landmarks_file", args.landmarks),
                                                     ("faces_dir", args.faces)) if value}}
    result = ingest(source, args.kind, name, Paths(cfg.root).ingested, settings_from(cfg), progress=sys.stderr.isatty()
                    or args.progress, **options)
    version = track_with_dvc(cfg.root, result.target) if not args.no_dvc else None
    print(f"ingested {result.samples} {args.kind} samples from {source} into {result.target} "
          f"(train {result.splits['train']}, val {result.splits['val']}, test {result.splits['test']}; "
          f"{result.exif_rotated} turned upright from EXIF)")
    if version:
        print(f"dataset version {version}: commit {result.target.name}.dvc and push the data (`deocclude data push`)")
    return 0


def _data_versions(args: argparse.Namespace) -> int:
    from pipeline.ingest.versions import format_versions, list_versions
    from pipeline.stages.common import dataset_tag

    cfg = load_config(args.params)
    print(format_versions(list_versions(cfg.root, dataset_tag(cfg))))
    return 0


def _ingest_commands(data_commands: Any) -> None:
    """`deocclude data ingest DIR --kind faces|labelled|masks [--name NAME]`."""
    ingest = data_commands.add_parser("ingest", help="check a raw dataset and add it in the manifest format, all or "
                                                     "nothing (data/raw/README.md gives the layouts)")
    ingest.add_argument("source", help="the raw dataset folder (only read)")
    ingest.add_argument("--kind", required=True, choices=("faces", "labelled", "masks"))
    ingest.add_argument("--name", help="the dataset's name under data/ingested/ (default: the folder's name)")
    ingest.add_argument("--cutouts", help="faces: RGBA occluder cut-outs (default: SOURCE/cutouts if present)")
    ingest.add_argument("--landmarks", help="faces: 68- or 5-point landmarks CSV (default: SOURCE/landmarks.csv)")
    ingest.add_argument("--faces", help="masks: the clean faces the masks are applied to (default: SOURCE/faces)")
    ingest.add_argument("--no-dvc", action="store_true", help="do not `dvc add` the result")
    ingest.add_argument("--progress", action="store_true", help="a progress bar even when stderr is not a terminal")
    ingest.set_defaults(handler=_data_ingest)
    data_commands.add_parser("versions", help="dataset versions: DVC hash, tag, files, size, validation status"
                             ).set_defaults(handler=_data_versions)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deocclude", description=__doc__)
    parser.add_argument("--params", default=PARAMS_FILE, help="params file (default: ./params.yaml)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)
    for stage in STAGES:
        stage_parser = commands.add_parser(command_name(stage), help=f"run the {stage} stage")
        stage_parser.set_defaults(handler=_run_stage(stage))
        if stage == "hpo":
            _hpo_arguments(stage_parser)
    commands.add_parser("models", help="list registered architectures with parameter counts").set_defaults(handler=_list_models)
    commands.add_parser("run", help="run the whole pipeline as a Prefect flow").set_defaults(handler=_run_flow)
    retrain = commands.add_parser("retrain", help="the retraining flow: apply overrides, retrain only if something changed")
    retrain.add_argument("--profile", help="set params.yaml's profile first")
    retrain.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                         help="set a params.yaml key first (repeatable), e.g. --set inpainter.epochs=3")
    retrain.add_argument("--force", action="store_true", help="run the pipeline even when nothing changed")
    retrain.set_defaults(handler=_retrain)
    deployments = commands.add_parser("deployments", help="prefect.yaml's deployments").add_subparsers(
        dest="deployments_command", required=True)
    serve = deployments.add_parser("serve", help="serve them from this process: schedules and API-triggered runs")
    serve.add_argument("--no-schedules", action="store_true", help="serve without their schedules (runs only on request)")
    serve.add_argument("--limit", type=int, default=1, help="flow runs at once (default 1: one checkout, one run)")
    serve.set_defaults(handler=_serve_deployments)
    repro = commands.add_parser("repro", help="`dvc repro [ARGS]` under one MLflow parent run")
    repro.add_argument("dvc_args", nargs=argparse.REMAINDER, help="arguments passed to dvc repro")
    repro.set_defaults(handler=_repro)
    sync = commands.add_parser("dvc-sync", help="rewrite dvc.yaml's code deps from the stages' imports")
    sync.add_argument("--check", action="store_true", help="only report differences (exit 1 if any)")
    sync.set_defaults(handler=_dvc_sync)
    predict = commands.add_parser("predict", help="de-occlude an image, or every image in a directory")
    predict.add_argument("input", help="input image (PNG or JPEG, any size), or a directory of them")
    predict.add_argument("-o", "--output", required=True,
                         help="de-occluded image (.png), same size as the input; for a directory, the output directory "
                              "(<name>.png and <name>_mask.png per image)")
    predict.add_argument("--mask-out", help="predicted occluder mask (.png)")
    predict.add_argument("--model", default="models:/deocclusion@champion", help="MLflow model URI")
    predict.add_argument("--reference", action="append", default=[], metavar="IMAGE",
                         help="a clean photograph of the same person (repeat for several): reference-guided "
                              "de-occlusion (paper 001) with params.yaml's `reference:` settings")
    predict.set_defaults(handler=_predict)
    promote = commands.add_parser("promote", help="make a deocclusion version champion (refuses one that broke a floor)")
    promote.add_argument("version", help="registered version number")
    promote.add_argument("--force", action="store_true", help="promote even a version that broke a floor")
    promote.add_argument("--reason", default="manual promotion", help="why, recorded in the alias history")
    promote.set_defaults(handler=_promote)
    rollback = commands.add_parser("rollback", help="give champion back to the version that held it before")
    rollback.add_argument("--force", action="store_true", help="even to a version that broke a floor")
    rollback.add_argument("--reason", default="", help="why, recorded in the alias history")
    rollback.set_defaults(handler=_rollback)
    registry = commands.add_parser("registry", help="the model registry's records").add_subparsers(dest="registry_command",
                                                                                                  required=True)
    registry.add_parser("history", help="every alias move: who, when, from, to, why").set_defaults(handler=_history)
    runs = commands.add_parser("runs", help="pipeline runs and registered versions").add_subparsers(dest="runs_command",
                                                                                                   required=True)
    compare = runs.add_parser("compare", help="params that differ and every metric side by side, with paired intervals")
    compare.add_argument("refs", nargs="+", metavar="REF",
                         help="registered version (models:/deocclusion/3, v3, 3) or MLflow run id; at least two")
    compare.add_argument("--html", help="HTML page to write (default: reports/compare.html)")
    compare.set_defaults(handler=_compare)
    reproduce = commands.add_parser("reproduce", help="restore a version's params, rerun the pipeline, check its metrics")
    reproduce.add_argument("model", help="registered version, e.g. models:/deocclusion/3")
    reproduce.add_argument("--no-force", action="store_true", help="let DVC skip stages it finds up to date")
    reproduce.set_defaults(handler=_reproduce)
    data_commands = commands.add_parser("data", help="the DVC-tracked data: sharing it through the DVC remote"
                                        ).add_subparsers(dest="data_command", required=True)
    _remote_commands(data_commands)
    _ingest_commands(data_commands)
    return parser


class _TerminalFormatter(logging.Formatter):
    """Progress as plain lines; anything worse than INFO says what and where."""

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno == logging.INFO:
            return record.getMessage()
        return f"{record.levelname} {record.name}: {record.getMessage()}"


def quiet_libraries() -> None:
    for library in ("great_expectations", "alembic", "httpx"):
        logging.getLogger(library).setLevel(logging.WARNING)


def configure_logging(verbose: bool) -> None:
    """Our loggers at INFO (DEBUG with -v); third-party libraries only when something is wrong."""
    handler = logging.StreamHandler()
    handler.setFormatter(_TerminalFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    for ours in ("pipeline", "flows", "deocclude"):
        logging.getLogger(ours).setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("dvc").propagate = False  # DVC prints through its own handler
    quiet_libraries()
    logging.captureWarnings(True)
    # Library warnings that are expected here and say nothing a user can act on.
    for message in ("The specified dataset source can be interpreted in multiple ways",
                    "Hint: Inferred schema contains integer column", ".*does not have many workers",
                    ".*log_every_n_steps", "Saving pytorch model by Pickle"):
        warnings.filterwarnings("ignore", message=message)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    try:
        return args.handler(args)
    except BadInput as error:
        print(f"deocclude {args.command}: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (DeoccludeError, FileNotFoundError, LookupError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"deocclude {args.command}: error: {message}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
