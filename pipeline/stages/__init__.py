"""One module per dvc.yaml stage, each with a thin `run(cfg)`.

STAGES is the one list of them, in pipeline order: the CLI's stage commands, the Prefect flow and
the check of dvc.yaml (`deocclude dvc-sync`) all read it.
"""

STAGES: tuple[str, ...] = ("resolve_params", "generate", "validate", "drift", "train_segmenter", "hpo", "train_inpainter",
                           "finetune", "evaluate", "register")


def command_name(stage: str) -> str:
    """The `deocclude` subcommand (and dvc.yaml cmd) of a stage: train_segmenter -> train-segmenter."""
    return stage.replace("_", "-")
