"""compose.yaml: the distributed stack, configured only through valid IMAGEBLUR_* settings."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.deploy.conftest import ROOT

from imageblur.config import Settings, load_settings

COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
FIELDS = {f"IMAGEBLUR_{name.upper()}" for name in Settings.model_fields}
APP = ("migrate", "api", "worker")
ONE_SHOT = {"migrate", "minio-init"}


TOKENS = ("IMAGEBLUR_API_TOKEN", "IMAGEBLUR_METRICS_TOKEN")


class UnsetError(Exception):
    """Compose refuses to start: a ${VAR:?message} variable is unset or empty."""


def _interpolate(value: str, variables: dict[str, str]) -> str:
    """Compose's ${VAR:-default} and ${VAR:?message}, with only `variables` set."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.groups()
        if variables.get(name):
            return variables[name]
        if op == ":?":
            raise UnsetError(f"{name}: {arg}")
        return arg

    value = re.sub(r"\$\{([A-Z_]+)(:-|:\?)([^}]*)\}", one, value)
    return value.replace("$$", "$")


def _env(service: str, variables: dict[str, str] | None = None) -> dict[str, str]:
    env = SERVICES[service].get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    if variables is None:
        variables = _dot_env()
    return {k: _interpolate(str(v), variables) for k, v in env.items()}


def _read_env_file(path: Path) -> dict[str, str]:
    lines = path.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


_made: dict[str, str] = {}


def _dot_env() -> dict[str, str]:
    """The .env `make compose-env` writes (scripts/tokens.sh), made once per session in a
    temporary folder: the quick start's own variables."""
    if not _made:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / ".env"
            subprocess.run(
                [str(ROOT / "scripts" / "tokens.sh"), "env", str(path)],
                check=True,
                capture_output=True,
                timeout=30,
            )
            _made.update(_read_env_file(path))
    return dict(_made)


def test_services() -> None:
    assert {"postgres", "rabbitmq", "minio", "minio-init", "migrate", "api", "worker"} <= set(
        SERVICES
    )
    assert SERVICES["worker"]["deploy"]["replicas"] == 2
    assert SERVICES["rabbitmq"]["image"].endswith("-management")


def test_every_imageblur_variable_is_a_setting() -> None:
    unknown = {
        key for name in SERVICES for key in _env(name) if key.startswith("IMAGEBLUR_")
    } - FIELDS
    assert not unknown, sorted(unknown)


@pytest.mark.parametrize("service", APP)
def test_distributed_settings(service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    env = _env(service)
    for key in [k for k in os.environ if k.startswith("IMAGEBLUR_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings()
    assert (settings.store, settings.repository, settings.queue) == ("s3", "postgres", "rabbitmq")
    assert "@postgres:5432/" in settings.postgres_dsn.get_secret_value()
    assert "@rabbitmq:5672/" in settings.rabbitmq_url.get_secret_value()
    assert settings.s3_endpoint_url == "http://minio:9000"
    assert settings.host == "0.0.0.0"
    # the buckets minio-init creates are the ones the application uses
    init = " ".join(SERVICES["minio-init"]["command"])
    assert f"local/{settings.s3_input_bucket}" in init
    assert f"local/{settings.s3_output_bucket}" in init
    # the tokens .env gives, and nothing else (no default in the file)
    for name in TOKENS:
        token = getattr(settings, name.removeprefix("IMAGEBLUR_").lower())
        assert token is not None and token.get_secret_value() == _dot_env()[name]
    # the credentials match the back ends' own
    assert settings.s3_secret_access_key is not None
    assert settings.s3_secret_access_key.get_secret_value() == _env("minio")["MINIO_ROOT_PASSWORD"]
    assert f":{_env('postgres')['POSTGRES_PASSWORD']}@" in settings.postgres_dsn.get_secret_value()
    assert f":{_env('rabbitmq')['RABBITMQ_DEFAULT_PASS']}@" in (
        settings.rabbitmq_url.get_secret_value()
    )


def test_healthchecks_and_order() -> None:
    for name, service in SERVICES.items():
        if name in ONE_SHOT:
            assert service.get("restart") == "no", name
            continue
        check = service.get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"
    for name, service in SERVICES.items():
        for dependency in service.get("depends_on") or {}:
            assert dependency in SERVICES, f"{name} depends on unknown {dependency}"
    for name in ("api", "worker"):
        depends = SERVICES[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["minio-init"]["condition"] == "service_completed_successfully"


def test_application_containers_are_hardened() -> None:
    for name in APP:
        service = SERVICES[name]
        assert service["read_only"] is True
        assert service["cap_drop"] == ["ALL"]
        assert "no-new-privileges:true" in service["security_opt"]
        assert service["command"] == [name]
    for name, service in SERVICES.items():
        for port in service.get("ports") or []:
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond localhost"


@pytest.mark.parametrize("service", APP)
def test_no_token_means_no_start(service: str) -> None:
    """Each token is a ${VAR:?message}: without .env (or the variable) compose refuses to
    start, naming `make compose-env`; there is no default, placeholder or not."""
    raw = SERVICES[service]["environment"]
    for name in TOKENS:
        assert re.fullmatch(r"\$\{" + name + r":\?[^}]*make compose-env[^}]*\}", raw[name])
        with pytest.raises(UnsetError, match=name):
            _env(service, {k: v for k, v in _dot_env().items() if k != name})
    assert "CHANGE_ME" not in (ROOT / "compose.yaml").read_text()
