"""Settings: environment, config files, precedence, and errors that name the setting."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from imageblur.config import SettingsError, load_settings


def test_defaults_are_the_embedded_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IMAGEBLUR_CONFIG", raising=False)
    s = load_settings()
    assert (s.store, s.repository, s.queue) == ("local", "sqlite", "memory")
    assert s.max_upload_bytes == 25_000_000 and s.max_pixels == 50_000_000
    assert s.port == 8080


def test_precedence_flag_over_env_over_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('port = 7000\nlog_level = "debug"\nmax_pixels = 1234\n')
    monkeypatch.setenv("IMAGEBLUR_PORT", "7100")
    monkeypatch.setenv("IMAGEBLUR_LOG_LEVEL", "warning")
    s = load_settings(toml, log_level="error")
    assert s.port == 7100  # env beats file
    assert s.log_level == "error"  # flag beats env
    assert s.max_pixels == 1234  # file beats default


def test_yaml_file_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    yaml = tmp_path / "c.yaml"
    yaml.write_text("queue: rabbitmq\nrabbitmq_prefetch: 4\n")
    monkeypatch.setenv("IMAGEBLUR_CONFIG", str(yaml))
    s = load_settings()
    assert s.queue == "rabbitmq" and s.rabbitmq_prefetch == 4


@pytest.mark.parametrize(
    ("var", "value", "named"),
    [
        ("IMAGEBLUR_PORT", "99999", "IMAGEBLUR_PORT"),
        ("IMAGEBLUR_STORE", "ftp", "IMAGEBLUR_STORE"),
        ("IMAGEBLUR_MAX_UPLOAD_BYTES", "lots", "IMAGEBLUR_MAX_UPLOAD_BYTES"),
        ("IMAGEBLUR_JPEG_QUALITY", "50", "IMAGEBLUR_JPEG_QUALITY"),
    ],
)
def test_wrong_values_fail_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, named: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError, match=named):
        load_settings()


def test_unknown_key_in_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("prot = 1\n")
    with pytest.raises(SettingsError, match="prot"):
        load_settings(path)


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="not found"):
        load_settings(tmp_path / "nope.toml")


def test_secrets_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEBLUR_POSTGRES_DSN", "postgresql://u:hunter2@db/x")
    monkeypatch.setenv("IMAGEBLUR_S3_ACCESS_KEY_ID", "AKIA")
    monkeypatch.setenv("IMAGEBLUR_S3_SECRET_ACCESS_KEY", "topsecret")
    monkeypatch.setenv("IMAGEBLUR_API_TOKEN", "bearer-token-0123456789")
    shown = str(load_settings().masked())
    assert "hunter2" not in shown and "topsecret" not in shown and "AKIA" not in shown
    assert "bearer-token" not in shown


@pytest.mark.parametrize("name", ["api_token", "metrics_token"])
@pytest.mark.parametrize("token", ["short", "a-long-enough-token-with-newline\n"])
def test_a_short_or_blank_containing_token_is_refused(
    monkeypatch: pytest.MonkeyPatch, token: str, name: str
) -> None:
    monkeypatch.setenv(f"IMAGEBLUR_{name.upper()}", token)
    with pytest.raises(SettingsError, match=name):
        load_settings()


def test_overlapping_s3_locations_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEBLUR_S3_INPUT_BUCKET", "photos")
    monkeypatch.setenv("IMAGEBLUR_S3_OUTPUT_BUCKET", "photos")
    monkeypatch.setenv("IMAGEBLUR_S3_OUTPUT_PREFIX", "blurred/")
    with pytest.raises(SettingsError, match="overlap"):
        load_settings()
    monkeypatch.setenv("IMAGEBLUR_S3_INPUT_PREFIX", "originals/")
    assert load_settings().s3_input_prefix == "originals/"


def test_the_privacy_preset_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IMAGEBLUR_CONFIG", raising=False)
    s = load_settings()
    assert s.detection_preset == "privacy"
    assert (s.detection_threshold, s.detection_small_threshold) == (0.12, 0.35)
    assert s.detection_large_threshold == 0.25
    assert (s.mask_scale, s.mask_margin_px) == (1.1, 12.0)


def test_the_tidy_preset_is_the_previous_operating_point(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEBLUR_DETECTION_PRESET", "tidy")
    s = load_settings()
    assert (s.detection_threshold, s.detection_small_threshold) == (0.39, None)
    assert s.detection_large_threshold is None
    assert (s.mask_scale, s.mask_margin_px) == (1.25, 3.0)


@pytest.mark.parametrize("preset", ["privacy", "tidy"])
@pytest.mark.parametrize("where", ["env", "file", "flag"])
def test_an_explicit_threshold_or_mask_scale_overrides_the_preset(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, preset: str, where: str
) -> None:
    monkeypatch.setenv("IMAGEBLUR_DETECTION_PRESET", preset)
    flags: dict[str, float] = {}
    toml = tmp_path / "c.toml"
    toml.write_text("")
    if where == "env":
        monkeypatch.setenv("IMAGEBLUR_DETECTION_THRESHOLD", "0.5")
        monkeypatch.setenv("IMAGEBLUR_MASK_SCALE", "1.7")
    elif where == "file":
        toml.write_text("detection_threshold = 0.5\nmask_scale = 1.7\n")
    else:
        flags = {"detection_threshold": 0.5, "mask_scale": 1.7}
    s = load_settings(toml, **flags)
    assert (s.detection_threshold, s.mask_scale) == (0.5, 1.7)
    # What was not set explicitly still comes from the preset.
    assert s.mask_margin_px == (12.0 if preset == "privacy" else 3.0)


def test_a_preset_in_the_file_yields_to_a_threshold_in_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    yaml = tmp_path / "c.yaml"
    yaml.write_text("detection_preset: tidy\n")
    monkeypatch.setenv("IMAGEBLUR_DETECTION_THRESHOLD", "0.2")
    s = load_settings(yaml)
    assert (s.detection_preset, s.detection_threshold, s.mask_scale) == ("tidy", 0.2, 1.25)


def test_an_unknown_preset_is_refused_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEBLUR_DETECTION_PRESET", "strict")
    with pytest.raises(SettingsError, match="IMAGEBLUR_DETECTION_PRESET"):
        load_settings()


# --- review, roles and the originals key ------------------------------------------------

KEY = base64.b64encode(b"\x07" * 32).decode()
OLD = base64.b64encode(b"\x08" * 32).decode()
API, REVIEWER = "api-token-0123456789", "reviewer-token-0123456789"


def test_review_is_off_and_originals_unencrypted_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("IMAGEBLUR_CONFIG", raising=False)
    s = load_settings()
    assert (s.review, s.review_ttl_s, s.uncertain_floor) == ("off", 7 * 24 * 3600, 0.1)
    assert s.originals_keys() == (None, [])
    assert s.reviewer_token is None


def test_review_required_needs_an_originals_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEBLUR_REVIEW", "required")
    with pytest.raises(SettingsError, match="IMAGEBLUR_ORIGINALS_KEY"):
        load_settings()
    monkeypatch.setenv("IMAGEBLUR_ORIGINALS_KEY", "  ")  # blank, as `${KEY:-}` gives
    with pytest.raises(SettingsError, match="IMAGEBLUR_ORIGINALS_KEY"):
        load_settings()
    monkeypatch.setenv("IMAGEBLUR_ORIGINALS_KEY", KEY)
    assert load_settings().originals_keys() == (b"\x07" * 32, [])


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (base64.b64encode(b"k" * 16).decode(), "exactly 32 bytes, not 16"),
        (base64.b64encode(b"k" * 33).decode(), "exactly 32 bytes, not 33"),
        ("not base64 at all!", "not base64"),
        ("k" * 32, "exactly 32 bytes, not 24"),  # 32 characters are not 32 bytes
    ],
)
@pytest.mark.parametrize("review", ["off", "required"])
def test_a_wrong_originals_key_is_refused_without_showing_it(
    monkeypatch: pytest.MonkeyPatch, value: str, why: str, review: str
) -> None:
    monkeypatch.setenv("IMAGEBLUR_REVIEW", review)
    monkeypatch.setenv("IMAGEBLUR_ORIGINALS_KEY", value)
    with pytest.raises(SettingsError, match="IMAGEBLUR_ORIGINALS_KEY") as caught:
        load_settings()
    assert why in str(caught.value)
    assert value not in str(caught.value)


def test_old_keys_are_checked_one_by_one_and_decrypt_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    short = base64.b64encode(b"x" * 31).decode()
    monkeypatch.setenv("IMAGEBLUR_ORIGINALS_OLD_KEYS", f"{OLD}, {short}")
    with pytest.raises(SettingsError, match=r"IMAGEBLUR_ORIGINALS_OLD_KEYS.*key 2 of 2") as e:
        load_settings()
    assert short not in str(e.value) and OLD not in str(e.value)
    monkeypatch.setenv("IMAGEBLUR_ORIGINALS_OLD_KEYS", f" {OLD} ,")
    monkeypatch.setenv("IMAGEBLUR_ORIGINALS_KEY", KEY)
    assert load_settings().originals_keys() == (b"\x07" * 32, [b"\x08" * 32])


def test_with_an_api_token_review_needs_a_distinct_reviewer_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IMAGEBLUR_REVIEW", "required")
    monkeypatch.setenv("IMAGEBLUR_ORIGINALS_KEY", KEY)
    monkeypatch.setenv("IMAGEBLUR_API_TOKEN", API)
    with pytest.raises(SettingsError, match="IMAGEBLUR_REVIEWER_TOKEN"):
        load_settings()
    monkeypatch.setenv("IMAGEBLUR_REVIEWER_TOKEN", API)
    with pytest.raises(SettingsError, match="must differ"):
        load_settings()
    monkeypatch.setenv("IMAGEBLUR_REVIEWER_TOKEN", "short")
    with pytest.raises(SettingsError, match="reviewer_token"):
        load_settings()
    monkeypatch.setenv("IMAGEBLUR_REVIEWER_TOKEN", REVIEWER)
    s = load_settings()
    assert s.reviewer_token is not None and s.reviewer_token.get_secret_value() == REVIEWER
    assert REVIEWER not in str(s.masked()) and KEY not in str(s.masked())


def test_a_reviewer_token_needs_an_api_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEBLUR_REVIEWER_TOKEN", REVIEWER)
    with pytest.raises(SettingsError, match="IMAGEBLUR_API_TOKEN"):
        load_settings()


def test_without_tokens_review_is_open(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEBLUR_REVIEW", "required")
    monkeypatch.setenv("IMAGEBLUR_ORIGINALS_KEY", KEY)
    assert load_settings().review == "required"


@pytest.mark.parametrize("ttl", ["0", "-1"])
def test_a_review_hold_lasts_some_time(monkeypatch: pytest.MonkeyPatch, ttl: str) -> None:
    monkeypatch.setenv("IMAGEBLUR_REVIEW_TTL_S", ttl)
    with pytest.raises(SettingsError, match="IMAGEBLUR_REVIEW_TTL_S"):
        load_settings()


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"IMAGEBLUR_UNCERTAIN_FLOOR": "0"}, "IMAGEBLUR_UNCERTAIN_FLOOR"),
        ({"IMAGEBLUR_UNCERTAIN_FLOOR": "0.12"}, "IMAGEBLUR_DETECTION_THRESHOLD is 0.12"),
        (
            {"IMAGEBLUR_UNCERTAIN_FLOOR": "0.3", "IMAGEBLUR_DETECTION_PRESET": "tidy"},
            None,  # tidy's threshold is 0.39: accepted
        ),
        (
            {"IMAGEBLUR_DETECTION_THRESHOLD": "0.04"},
            "IMAGEBLUR_DETECTION_THRESHOLD is 0.04",
        ),
        (
            {
                "IMAGEBLUR_EXTRA_DETECTORS": '[{"family": "centerface", "threshold": 0.03}]',
            },
            r"IMAGEBLUR_EXTRA_DETECTORS\[0\].threshold is 0.03",
        ),
    ],
)
def test_the_uncertain_floor_is_below_every_threshold_in_use(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: str | None
) -> None:
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    if named is None:
        assert load_settings().uncertain_floor == float(env["IMAGEBLUR_UNCERTAIN_FLOOR"])
        return
    with pytest.raises(SettingsError, match=named):
        load_settings()


@pytest.mark.parametrize("preset", ["privacy", "tidy"])
def test_a_brought_detector_keeps_its_own_threshold_whatever_the_preset(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, preset: str
) -> None:
    model = tmp_path / "r.onnx"
    model.write_bytes(b"x")
    monkeypatch.setenv("IMAGEBLUR_DETECTION_PRESET", preset)
    brought = {"detector": "retinaface", "model_path": model, "model_sha256": "0" * 64}
    s = load_settings(**brought)
    assert s.detection_threshold == 0.5  # not CenterFace's 0.12 / 0.39
    assert load_settings(**brought, detection_threshold=0.3).detection_threshold == 0.3
