"""The code each dvc.yaml stage runs, found from the imports, so its deps cannot fall behind.

A stage runs `python -m pipeline.cli <stage>`: the CLI module, its package `__init__`s, the stage
module and everything those import, at module level or inside functions, recursively. `register`
ships the whole package inside the logged pyfunc, so it depends on all of it.
"""

from __future__ import annotations

import ast
from pathlib import Path

from pipeline.stages import STAGES, command_name

PACKAGE = "pipeline"
WHOLE_PACKAGE_STAGES = ("register",)


def _module_file(root: Path, module: str) -> Path | None:
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_modules(path: Path, module: str, top_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1])
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            found.add(source)
            found.update(f"{source}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return {name for name in found if name == PACKAGE or name.startswith(PACKAGE + ".")}


def _with_parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:end]) for end in range(1, len(parts) + 1)]


def module_closure(root: Path, start: list[str], top_level_only: frozenset[str] = frozenset()) -> set[Path]:
    """Files of the project modules reachable from `start` through imports (and their packages)."""
    files: set[Path] = set()
    pending = [name for module in start for name in _with_parents(module)]
    seen: set[str] = set()
    while pending:
        module = pending.pop()
        if module in seen:
            continue
        seen.add(module)
        path = _module_file(root, module)
        if path is None:
            continue  # `from pkg import function`: not a module
        files.add(path)
        for imported in _imported_modules(path, module, module in top_level_only):
            pending.extend(_with_parents(imported))
    return files


def stage_code_files(root: Path, stage: str) -> set[Path]:
    if stage in WHOLE_PACKAGE_STAGES:
        return {path for path in (root / PACKAGE).rglob("*.py") if "__pycache__" not in path.parts}
    # The CLI's other commands import their code inside their handlers; a stage loads only its own.
    return module_closure(root, [f"{PACKAGE}.cli", f"{PACKAGE}.stages.{stage}"], frozenset({f"{PACKAGE}.cli"}))


def collapse(root: Path, files: set[Path]) -> list[str]:
    """Relative paths, a whole directory named where every Python file under it is needed."""
    def python_files(directory: Path) -> set[Path]:
        return {p for p in directory.rglob("*.py") if "__pycache__" not in p.parts}

    chosen: set[Path] = set()
    for path in sorted(files):
        directory = path.parent
        top = None
        while directory != root and python_files(directory) <= files:
            top = directory
            directory = directory.parent
        chosen.add(top or path)
    # drop entries inside a chosen directory
    kept = {p for p in chosen if not any(q != p and q in p.parents for q in chosen)}
    return sorted(p.relative_to(root).as_posix() for p in kept)


def expected_code_deps(root: Path) -> dict[str, list[str]]:
    return {stage: collapse(root, stage_code_files(root, stage)) for stage in STAGES}


def _is_code_dep(dep: str) -> bool:
    return dep == PACKAGE or dep.startswith(PACKAGE + "/")


def sync_dvc_yaml(root: Path, write: bool) -> list[str]:
    """Compare dvc.yaml with STAGES and the stages' imports; rewrite its code deps when `write`.

    Returns the problems found (after writing, those that writing cannot fix)."""
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 120
    yaml.indent(mapping=2, sequence=4, offset=2)
    path = root / "dvc.yaml"
    document = yaml.load(path.read_text())
    stages = document.get("stages", {})
    problems: list[str] = []
    if list(stages) != list(STAGES):
        problems.append(f"{path}: stages {list(stages)} differ from pipeline.stages.STAGES {list(STAGES)}")
    for stage, code_deps in expected_code_deps(root).items():
        if stage not in stages:
            continue
        definition = stages[stage]
        expected_cmd = f"bin/deocclude {command_name(stage)}"
        if definition.get("cmd") != expected_cmd:
            problems.append(f"{path}: stage {stage}: cmd must be {expected_cmd!r}, got {definition.get('cmd')!r}")
        deps = [str(dep) for dep in definition.get("deps", [])]
        declared = [dep for dep in deps if _is_code_dep(dep)]
        if declared != code_deps:
            if write:
                definition["deps"] = [dep for dep in deps if not _is_code_dep(dep)] + code_deps
            else:
                missing, extra = sorted(set(code_deps) - set(declared)), sorted(set(declared) - set(code_deps))
                problems.append(f"{path}: stage {stage}: code deps out of date (missing {missing}, not imported {extra}"
                                f"{', order' if not missing and not extra else ''}); run `deocclude dvc-sync`")
    if write:
        partial = path.with_name(path.name + ".partial")
        with open(partial, "w") as handle:
            yaml.dump(document, handle)
        partial.replace(path)
    return problems
