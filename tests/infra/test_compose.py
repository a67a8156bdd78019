"""infra/docker-compose.yml without a Docker daemon: the compose-spec schema, the services' commands
parsed by the installed MLflow and Prefect CLIs, health checks, only documented ports published,
secrets only from infra/.env. `docker compose config` checks it too where the compose plugin exists.

compose-spec.json beside this file is schema/compose-spec.json of the compose-spec/compose-spec
repository (Apache-2.0) at commit 170098ba07d9f53c383a41bfd4c5166b0a4529a6 (2026-06-23).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO

INFRA = REPO / "infra"
COMPOSE = INFRA / "docker-compose.yml"
ENV_EXAMPLE = INFRA / ".env.example"
SCHEMA = Path(__file__).with_name("compose-spec.json")
# What README "Team set-up" documents: MLflow, Prefect, MinIO's S3 API, Postgres for Optuna.
DOCUMENTED_PORTS = {5000, 4200, 9000, 5432}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|ACCESS_KEY")
# Compose's interpolation: $$ is a literal $, else ${NAME}, ${NAME:-default}, ${NAME:?error}, ... or $NAME.
VARIABLE = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_]\w*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}|\$(?P<bare>[A-Za-z_]\w*)")


class MissingVariable(ValueError):
    pass


def read_env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if line.strip() and not line.startswith("#"))
    return {name.strip(): value.strip() for name, value in pairs}


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """The compose file as `docker compose` sees it with `env` as its .env file."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("name") or match.group("bare")
        op, arg, present = match.group("op"), match.group("arg"), env.get(match.group("name") or match.group("bare"))
        if op in (":?", "?") and not present:
            raise MissingVariable(arg or f"{name} is required")
        if op in (":-", "-") and not present:
            return arg
        if op in (":+", "+"):
            return arg if present else ""
        return present or ""

    return VARIABLE.sub(substitute, value)


def variable_uses(value: Any) -> list[tuple[str, str | None]]:
    """(name, operator) of every variable the compose data reads."""
    if isinstance(value, dict):
        return [use for key, item in value.items() for use in variable_uses(key) + variable_uses(item)]
    if isinstance(value, list):
        return [use for item in value for use in variable_uses(item)]
    return [(m.group("name") or m.group("bare"), m.group("op")) for m in VARIABLE.finditer(str(value)) if m.group(0) != "$$"]


@pytest.fixture(scope="module")
def raw_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def compose(raw_compose) -> dict[str, Any]:
    return interpolate(raw_compose, read_env_file(ENV_EXAMPLE))


def published_ports(service: dict[str, Any]) -> list[int]:
    ports = []
    for port in service.get("ports", []):
        published = port.get("published") if isinstance(port, dict) else str(port).rsplit(":", 1)[0].rsplit(":", 1)[-1]
        ports.append(int(published))
    return ports


def test_docker_compose_config_accepts_the_file():
    if shutil.which("docker") is None or subprocess.run(["docker", "compose", "version"], capture_output=True).returncode:
        pytest.skip("no `docker compose` plugin here; test_the_file_matches_the_compose_spec_schema checks the file")
    result = subprocess.run(["docker", "compose", "-f", str(COMPOSE), "--env-file", str(ENV_EXAMPLE), "config", "--quiet"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_the_file_matches_the_compose_spec_schema(compose):
    import jsonschema

    schema = json.loads(SCHEMA.read_text())
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_the_schema_check_catches_a_broken_file(compose):
    import jsonschema

    broken = {**compose, "services": {**compose["services"], "mlflow": {**compose["services"]["mlflow"], "healthcheck": "yes"}}}
    assert not jsonschema.Draft7Validator(json.loads(SCHEMA.read_text())).is_valid(broken)


def test_the_stack_has_its_services(compose):
    assert set(compose["services"]) == {"postgres", "minio", "minio-setup", "mlflow", "prefect-server", "prefect-worker"}


def test_every_variable_is_in_env_example_and_a_secret_has_no_default(raw_compose):
    example = read_env_file(ENV_EXAMPLE)
    uses = variable_uses(raw_compose)
    names = {name for name, _ in uses}
    optional = {name for name, op in uses if op in (":-", "-")}
    assert names - optional <= set(example), f"required but not in .env.example: {sorted(names - optional - set(example))}"
    assert set(example) <= names, f"in .env.example but unused: {sorted(set(example) - names)}"
    for name, op in uses:
        if SECRET_NAME.search(name):
            assert op == ":?", f"${{{name}}} must be ${{{name}:?...}}: a secret has no default and stops compose when unset"
    for name, value in example.items():
        if SECRET_NAME.search(name) and "ACCESS_KEY" not in name:
            assert value == "change-me", f".env.example: {name} must be the placeholder change-me, got {value!r}"


def test_a_missing_secret_stops_compose(raw_compose):
    env = {k: v for k, v in read_env_file(ENV_EXAMPLE).items() if k != "POSTGRES_PASSWORD"}
    with pytest.raises(MissingVariable, match="POSTGRES_PASSWORD"):
        interpolate(raw_compose, env)


def test_no_credential_is_written_in_the_file(raw_compose):
    """Secret-looking settings and the user:password part of URLs come from variables only."""
    variable_only = re.compile(r"(\$\{[A-Za-z_]\w*(:\?[^}]*)?\}|:)+")
    for name, service in raw_compose["services"].items():
        environment = service.get("environment") or {}
        assert isinstance(environment, dict), f"{name}: environment as a mapping, so this test can read it"
        for key, value in environment.items():
            if SECRET_NAME.search(key):
                assert variable_only.fullmatch(str(value)), f"{name}.{key} = {value!r}: a secret must be ${{NAME:?...}}"
        for text in map(str, [*environment.values(), json.dumps(service.get("command", ""))]):
            for userinfo in re.findall(r"://([^/@\s\"]+)@", text):
                assert variable_only.fullmatch(userinfo), f"{name}: credentials {userinfo!r} written in a URL"
    assert "/infra/.env" in (REPO / ".gitignore").read_text().splitlines()


def readme_section(title: str) -> str:
    return (REPO / "README.md").read_text().split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_team_set_up_points_teammates_at_the_shared_host_not_at_this_machine():
    team_setup = readme_section("Team set-up")
    assert "127.0.0.1" not in team_setup and "localhost" not in team_setup
    for command in ("cp infra/.env.example infra/.env", "docker compose -f infra/docker-compose.yml --env-file infra/.env up -d",
                    "export MLFLOW_TRACKING_URI=http://", "export PREFECT_API_URL=http://", "dvc push", "make run"):
        assert command in team_setup, f"README Team set-up lacks {command!r}"


def test_only_the_documented_ports_are_published(compose):
    published = {port for service in compose["services"].values() for port in published_ports(service)}
    assert published == DOCUMENTED_PORTS
    team_setup = readme_section("Team set-up")
    for port in DOCUMENTED_PORTS:
        assert re.search(rf"\b{port}\b", team_setup), f"README Team set-up does not document port {port}"
    for name, service in compose["services"].items():
        assert service.get("network_mode") != "host" and not service.get("privileged"), name


def test_services_are_health_checked_and_wait_for_healthy_dependencies(compose):
    services = compose["services"]
    one_shot = {name for name, service in services.items() if service.get("restart") == "no"}
    assert one_shot == {"minio-setup"}
    for name, service in services.items():
        if name not in one_shot:
            assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
        for dependency, condition in (service.get("depends_on") or {}).items():
            expected = "service_completed_successfully" if dependency in one_shot else "service_healthy"
            assert condition == {"condition": expected}, f"{name} -> {dependency}: {condition}"
    assert {"postgres", "minio-setup"} <= set(services["mlflow"]["depends_on"])
    assert {"prefect-server", "mlflow"} <= set(services["prefect-worker"]["depends_on"])


def test_mlflow_command_parses_with_the_installed_cli(compose):
    from mlflow.cli import cli
    from sqlalchemy.engine import make_url

    service = compose["services"]["mlflow"]
    command, environment = service["command"], service["environment"]
    assert command[:2] == ["mlflow", "server"]
    context = cli.commands["server"].make_context("server", list(command[2:]))
    assert context.params["serve_artifacts"] is True
    bucket = compose["services"]["minio-setup"]["environment"]["S3_BUCKET"]
    assert context.params["artifacts_destination"] == f"s3://{bucket}/mlflow"
    assert environment["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    backend = make_url(environment["MLFLOW_BACKEND_STORE_URI"])   # the server reads it from this variable
    assert (backend.get_backend_name(), backend.get_driver_name(), backend.host, backend.database) == \
        ("postgresql", "psycopg", "postgres", "mlflow")
    backend.get_dialect().import_dbapi()   # the driver the image installs is the one this URL names


def test_prefect_commands_parse_with_the_installed_cli(compose):
    import prefect.cli  # noqa: F401  (registers the commands)
    from prefect.cli._app import _app
    from sqlalchemy.engine import make_url

    services = compose["services"]
    for name in ("prefect-server", "prefect-worker"):
        command = services[name]["command"]
        assert command[0] == "prefect"
        _, bound, _ = _app.parse_args(command[1:], exit_on_error=False, print_error=False)
        if name == "prefect-server":
            assert bound.arguments == {"host": "0.0.0.0", "port": 4200}
        else:
            assert bound.arguments == {"work_pool_name": "deocclude", "worker_type": "process", "with_healthcheck": True}
    database = make_url(services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"])
    assert (database.get_driver_name(), database.host, database.database) == ("asyncpg", "postgres", "prefect")
    assert services["prefect-worker"]["environment"]["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    assert services["prefect-worker"]["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    if (REPO / "prefect.yaml").is_file():   # its deployments go to the pool this worker polls
        deployments = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
        assert {deployment["work_pool"]["name"] for deployment in deployments} == {"deocclude"}


def test_shell_commands_parse(compose):
    setup = compose["services"]["minio-setup"]
    scripts = {"minio-setup": setup["command"][0], "postgres-init.sh": (INFRA / "postgres-init.sh").read_text(),
               "postgres healthcheck": compose["services"]["postgres"]["healthcheck"]["test"][1]}
    for name, script in scripts.items():
        result = subprocess.run(["sh", "-n"], input=script, capture_output=True, text=True)
        assert result.returncode == 0, f"{name}: {result.stderr}"
    assert setup["entrypoint"] == ["/bin/sh", "-c"]
    assert 'mc mb --ignore-existing "stack/$S3_BUCKET"' in setup["command"][0]
    for service in ("mlflow", "prefect-server", "prefect-worker"):
        test = compose["services"][service]["healthcheck"]["test"]
        assert test[:3] == ["CMD", "python", "-c"]
        compile(test[3], f"{service} healthcheck", "exec")


def test_the_databases_the_services_use_are_created(compose):
    from sqlalchemy.engine import make_url

    postgres = compose["services"]["postgres"]
    init = (INFRA / "postgres-init.sh").read_text()
    created = {postgres["environment"]["POSTGRES_DB"], *re.findall(r"CREATE DATABASE (\w+)", init)}
    used = {make_url(compose["services"]["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"]).database,
            make_url(compose["services"]["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]).database,
            "optuna"}
    assert used <= created
    assert "./postgres-init.sh:/docker-entrypoint-initdb.d/10-databases.sh:ro" in postgres["volumes"]


def test_images_match_the_python_pins(compose):
    import mlflow
    import prefect

    pins = dict(re.findall(r'"([A-Za-z0-9_.\[\]-]+)==([^"]+)"', (REPO / "pyproject.toml").read_text()))
    mlflow_docker = (INFRA / "mlflow.Dockerfile").read_text()
    assert f"FROM ghcr.io/mlflow/mlflow:v{mlflow.__version__}\n" in mlflow_docker
    assert pins["mlflow"] == mlflow.__version__ and pins["prefect"] == prefect.__version__
    for package in ("psycopg[binary]", "boto3"):
        assert f'"{package}=={pins[package]}"' in mlflow_docker, f"mlflow.Dockerfile: {package} not at pyproject's pin"
    prefect_image = f"prefecthq/prefect:{prefect.__version__}-python3.11"
    assert compose["services"]["prefect-server"]["image"] == prefect_image
    assert f"FROM {prefect_image}\n" in (INFRA / "worker.Dockerfile").read_text()
    assert compose["services"]["postgres"]["image"] == "postgres:15"
    for name, service in compose["services"].items():
        image = service.get("image", "")
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin the image version, got {image!r}"


def test_build_contexts_hold_what_the_dockerfiles_copy(compose):
    for name, service in compose["services"].items():
        if "build" not in service:
            continue
        context = (INFRA / service["build"]["context"]).resolve()
        dockerfile = context / service["build"]["dockerfile"]
        assert dockerfile.is_file(), f"{name}: {dockerfile} is missing"
        for line in dockerfile.read_text().splitlines():
            if line.startswith("COPY "):
                for source in shlex.split(line)[1:-1]:
                    assert (context / source).exists(), f"{dockerfile.name}: COPY {source}: not in {context}"


def test_install_postgres_does_nothing_where_postgres_is_installed():
    if not any(Path("/usr/lib/postgresql").glob("*/bin/initdb")) and shutil.which("initdb") is None:
        pytest.skip("Postgres is not installed here")
    result = subprocess.run(["sh", str(INFRA / "install_postgres.sh")], capture_output=True, text=True, timeout=30)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
