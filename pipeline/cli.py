"""`deocclude <command>`: the pipeline stages dvc.yaml runs, the model list, the Prefect flow, and predict."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.config import PARAMS_FILE, ConfigError, load_config

logger = logging.getLogger("deocclude")

STAGES: dict[str, str] = {
    "generate": "pipeline.stages.generate",
    "validate": "pipeline.stages.validate",
    "train-segmenter": "pipeline.stages.train_segmenter",
    "train-inpainter": "pipeline.stages.train_inpainter",
    "finetune": "pipeline.stages.finetune",
    "evaluate": "pipeline.stages.evaluate",
    "register": "pipeline.stages.register",
}
EXIT_FAILURE, EXIT_BAD_INPUT = 1, 2


class BadInput(Exception):
    """An input file the user named cannot be used; the message names it."""


def _run_stage(name: str) -> Callable[[argparse.Namespace], int]:
    def command(args: argparse.Namespace) -> int:
        import importlib

        importlib.import_module(STAGES[name]).run(load_config(args.params))
        return 0

    return command


def _list_models(args: argparse.Namespace) -> int:
    from pipeline.models.registry import count_parameters, list_models

    print(f"{'name':<22} {'task':<13} {'parameters':>12}  description")
    for entry in list_models():
        print(f"{entry.name:<22} {entry.task:<13} {count_parameters(entry.builder()):>12,}  {entry.description}")
    return 0


def _run_flow(args: argparse.Namespace) -> int:
    from flows.pipeline import StageFailed, deocclude_pipeline

    try:
        summary = deocclude_pipeline(project_dir=str(Path(args.params).resolve().parent))
    except StageFailed as error:
        print(f"deocclude run: error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"Stages run: {', '.join(summary['stages_run']) or 'none (everything up to date)'}")
    print(f"Evaluation report: {summary['report']}")
    print(f"Champion: models:/deocclusion@champion is version {summary['champion_version']} "
          f"({summary['metric']} = {summary['champion_value']:.3f}); this run's version {summary['version']} "
          f"is {summary['alias']}")
    print(f"Tracking store: {summary['tracking_uri']}")
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


def _predict(args: argparse.Namespace) -> int:
    image = read_input_image(Path(args.input))
    for output in (args.output, args.mask_out):
        if output and Path(output).suffix.lower() != ".png":
            raise BadInput(f"{output}: output must be a .png file")
    import pandas as pd

    from pipeline.registry.models import decode_image, encode_png, load_deocclusion
    from pipeline.registry.tracking import configure_tracking

    params = Path(args.params)
    if params.is_file():
        configure_tracking(load_config(params).registry)
    elif not os.environ.get("MLFLOW_TRACKING_URI"):
        raise ConfigError(f"{params}: not found, and MLFLOW_TRACKING_URI is not set: no model registry to load "
                          f"{args.model} from (run in the project directory or pass --params)")
    model = load_deocclusion(args.model)
    result = model.predict(pd.DataFrame({"image": [encode_png(image)]}))
    _write_png_atomically(decode_image(result["image"][0]), Path(args.output))
    if args.mask_out:
        import numpy as np

        _write_png_atomically(np.asarray(decode_image(result["mask"][0]))[..., 0], Path(args.mask_out))
    print(f"wrote {args.output}" + (f" and {args.mask_out}" if args.mask_out else ""))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deocclude", description=__doc__)
    parser.add_argument("--params", default=PARAMS_FILE, help="params file (default: ./params.yaml)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in STAGES:
        commands.add_parser(name, help=f"run the {name} stage").set_defaults(handler=_run_stage(name))
    commands.add_parser("models", help="list registered architectures with parameter counts").set_defaults(handler=_list_models)
    commands.add_parser("run", help="run the whole pipeline as a Prefect flow").set_defaults(handler=_run_flow)
    predict = commands.add_parser("predict", help="de-occlude one image with a registered model")
    predict.add_argument("input", help="input image (PNG or JPEG, any size)")
    predict.add_argument("-o", "--output", required=True, help="de-occluded image (.png), same size as the input")
    predict.add_argument("--mask-out", help="predicted occluder mask (.png)")
    predict.add_argument("--model", default="models:/deocclusion@champion", help="MLflow model URI")
    predict.set_defaults(handler=_predict)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("great_expectations", "lightning.pytorch", "alembic", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("dvc").propagate = False  # DVC prints through its own handler
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    from pipeline.data.validation import DataValidationError

    try:
        return args.handler(args)
    except BadInput as error:
        print(f"deocclude {args.command}: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (ConfigError, DataValidationError, FileNotFoundError, LookupError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"deocclude {args.command}: error: {message}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
