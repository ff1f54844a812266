"""compose.yaml: the distributed stack, configured only through valid IMAGEBLUR_* settings."""

from __future__ import annotations

import os
import re
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


def _interpolate(value: str) -> str:
    """Compose's ${VAR:-default} with an empty environment."""
    value = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)
    return value.replace("$$", "$")


def _env(service: str) -> dict[str, str]:
    env = SERVICES[service].get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: _interpolate(str(v)) for k, v in env.items()}


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
