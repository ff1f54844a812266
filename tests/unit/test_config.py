"""Settings: environment, config files, precedence, and errors that name the setting."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from imageblur.config import SettingsError, load_settings
from imageblur.entrypoints.startup import check_api, check_worker

THOROUGH_THRESHOLDS = (0.24, 0.65, 0.4)  # threshold, small, large: docs/detection.md


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
        # Past libjpeg-turbo's own limit the lossless patch would differ from the decode.
        ("IMAGEBLUR_MAX_JPEG_SCANS", "501", "IMAGEBLUR_MAX_JPEG_SCANS"),
        ("IMAGEBLUR_MAX_JPEG_SCANS", "0", "IMAGEBLUR_MAX_JPEG_SCANS"),
        ("IMAGEBLUR_API_PIXEL_BUDGET", "0", "IMAGEBLUR_API_PIXEL_BUDGET"),
        ("IMAGEBLUR_MAX_VIDEO_BYTES", "0", "IMAGEBLUR_MAX_VIDEO_BYTES"),
        ("IMAGEBLUR_MAX_VIDEO_SECONDS", "0", "IMAGEBLUR_MAX_VIDEO_SECONDS"),
        ("IMAGEBLUR_MAX_VIDEO_PIXELS", "100000000", "IMAGEBLUR_MAX_VIDEO_PIXELS"),  # past 8K
        ("IMAGEBLUR_VIDEO_DETECT_STRIDE", "0", "IMAGEBLUR_VIDEO_DETECT_STRIDE"),
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


def test_the_thorough_preset_looks_twice_at_higher_thresholds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IMAGEBLUR_DETECTION_PRESET", "thorough")
    s = load_settings()
    assert (s.detection_threshold, s.detection_small_threshold) == THOROUGH_THRESHOLDS[:2]
    assert s.detection_large_threshold == THOROUGH_THRESHOLDS[2]
    assert (s.mask_scale, s.mask_margin_px) == (1.1, 12.0)
    assert s.detection_mirrored_passes == 2
    assert s.detection_small_face_pass_scale == 1.41
    assert s.detection_precision == "float"  # its thresholds are the float model's
    # The other presets look once; an explicit setting wins over the preset's.
    monkeypatch.setenv("IMAGEBLUR_DETECTION_MIRRORED_PASSES", "0")
    monkeypatch.setenv("IMAGEBLUR_DETECTION_SMALL_FACE_PASS_SCALE", "1.2")
    monkeypatch.setenv("IMAGEBLUR_DETECTION_PRECISION", "int8")
    s = load_settings()
    assert (s.detection_mirrored_passes, s.detection_small_face_pass_scale) == (0, 1.2)
    assert s.detection_precision == "int8"
    monkeypatch.delenv("IMAGEBLUR_DETECTION_PRECISION")
    for preset in ("privacy", "tidy"):
        monkeypatch.setenv("IMAGEBLUR_DETECTION_PRESET", preset)
        monkeypatch.delenv("IMAGEBLUR_DETECTION_MIRRORED_PASSES", raising=False)
        monkeypatch.delenv("IMAGEBLUR_DETECTION_SMALL_FACE_PASS_SCALE", raising=False)
        s = load_settings()
        assert (s.detection_mirrored_passes, s.detection_small_face_pass_scale) == (0, None)
        assert s.detection_precision == "int8"


# The settings a preset decides: what an upload's `preset` must set as a server would.
PRESET_DECIDES = (
    "detection_threshold",
    "detection_small_threshold",
    "detection_large_threshold",
    "mask_scale",
    "mask_margin_px",
    "detection_mirrored_passes",
    "detection_small_face_pass_scale",
    "detection_precision",
)


@pytest.mark.parametrize(
    "given",
    [
        {},
        {"detection_preset": "thorough"},
        {"detector_runtime": "onnxruntime"},
        {"mask_scale": 1.6, "detection_mirrored_passes": 1},
        {"detection_preset": "thorough", "detection_precision": "int8"},
    ],
)
@pytest.mark.parametrize("preset", ["privacy", "tidy", "thorough"])
def test_an_uploads_preset_sets_what_a_server_started_with_it_has(
    given: dict[str, object], preset: str
) -> None:
    # `with_preset` (an upload's `preset`) and a server started with that preset and the
    # same explicit settings agree on every setting a preset decides.
    chosen = load_settings(**given).with_preset(preset)
    started = load_settings(**{**given, "detection_preset": preset})
    for name in PRESET_DECIDES:
        assert getattr(chosen, name) == getattr(started, name), name
    assert chosen.detection_preset == preset


@pytest.mark.parametrize("value", ["1.0", "0.5", "2.5", "x"])
def test_a_small_face_pass_must_enlarge_at_most_twice(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("IMAGEBLUR_DETECTION_SMALL_FACE_PASS_SCALE", value)
    with pytest.raises(SettingsError, match="detection_small_face_pass_scale"):
        load_settings()


@pytest.mark.parametrize("preset", ["privacy", "tidy", "thorough"])
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
    assert s.mask_margin_px == (3.0 if preset == "tidy" else 12.0)


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


def test_the_shipped_detector_runs_int8_on_openvino_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("IMAGEBLUR_DETECTION_PRECISION", "IMAGEBLUR_DETECTOR_RUNTIME"):
        monkeypatch.delenv(name, raising=False)
    assert load_settings().detection_precision == "int8"
    assert load_settings(detection_precision="float").detection_precision == "float"


def test_onnx_runs_float_unless_int8_is_asked_for_then_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The int8 model is an OpenVINO IR: onnxruntime, or an ONNX file of one's own, runs
    # the float graph; asking for int8 with either names the setting to change.
    monkeypatch.setenv("IMAGEBLUR_DETECTOR_RUNTIME", "onnxruntime")
    assert load_settings().detection_precision == "float"
    monkeypatch.setenv("IMAGEBLUR_DETECTION_PRECISION", "int8")
    with pytest.raises(SettingsError, match="IMAGEBLUR_DETECTION_PRECISION=float"):
        load_settings()
    monkeypatch.delenv("IMAGEBLUR_DETECTOR_RUNTIME")
    with pytest.raises(SettingsError, match="IMAGEBLUR_MODEL_PATH"):
        load_settings(model_path="/models/centerface.onnx")
    monkeypatch.delenv("IMAGEBLUR_DETECTION_PRECISION")
    assert load_settings(model_path="/models/centerface.onnx").detection_precision == "float"


def test_an_unknown_precision_is_refused_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEBLUR_DETECTION_PRECISION", "fp16")
    with pytest.raises(SettingsError, match="IMAGEBLUR_DETECTION_PRECISION"):
        load_settings()


# --- review, roles and the originals key ------------------------------------------------

KEY = base64.b64encode(b"\x07" * 32).decode()
OLD = base64.b64encode(b"\x08" * 32).decode()
API, REVIEWER = "api-token-0123456789", "reviewer-token-0123456789"
OTHER = "other-token-0123456789"


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


def test_keeping_originals_needs_an_originals_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEBLUR_KEEP_ORIGINALS", "true")
    with pytest.raises(SettingsError, match=r"IMAGEBLUR_KEEP_ORIGINALS.*IMAGEBLUR_ORIGINALS_KEY"):
        load_settings()
    # Old keys alone seal nothing: originals kept for good would be stored as uploaded.
    monkeypatch.setenv("IMAGEBLUR_ORIGINALS_OLD_KEYS", KEY)
    with pytest.raises(SettingsError, match="IMAGEBLUR_ORIGINALS_KEY"):
        load_settings()
    monkeypatch.setenv("IMAGEBLUR_ORIGINALS_KEY", KEY)
    monkeypatch.delenv("IMAGEBLUR_ORIGINALS_OLD_KEYS")
    assert load_settings().keep_originals


def test_plaintext_originals_are_refused_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IMAGEBLUR_CONFIG", raising=False)
    assert load_settings().originals_allow_plaintext is False
    monkeypatch.setenv("IMAGEBLUR_ORIGINALS_ALLOW_PLAINTEXT", "true")
    assert load_settings().originals_allow_plaintext is True


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


def test_named_reviewers_are_read_and_checked_without_showing_a_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IMAGEBLUR_API_TOKEN", API)
    monkeypatch.setenv("IMAGEBLUR_REVIEWER_TOKENS", f"photo-desk:{REVIEWER},night.desk_2:{OTHER}")
    s = load_settings()
    assert s.reviewers() == {"photo-desk": REVIEWER, "night.desk_2": OTHER}
    assert REVIEWER not in str(s.masked()) and OTHER not in str(s.masked())
    for value, why in [
        (f"photo-desk:{REVIEWER},night-desk:{REVIEWER}", "same token"),
        (f"photo-desk:{REVIEWER},photo-desk:{OTHER}", "given twice"),
        (f"photo-desk:{API}", "differ"),
        (f"Photo-Desk:{REVIEWER}", "must match"),
        (f"{'x' * 65}:{REVIEWER}", "must match"),
        (REVIEWER, "not name:token"),
        ("photo-desk:short-token", "at least 16"),
        (f"photo-desk:{REVIEWER}, night-desk:{OTHER}", "must match"),  # a space
    ]:
        monkeypatch.setenv("IMAGEBLUR_REVIEWER_TOKENS", value)
        with pytest.raises(SettingsError, match=r"IMAGEBLUR_REVIEWER_TOKENS|reviewer") as caught:
            load_settings()
        assert why in str(caught.value), (value, caught.value)
        assert REVIEWER not in str(caught.value) and OTHER not in str(caught.value)


def test_the_older_reviewer_token_is_the_reviewer_named_reviewer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IMAGEBLUR_API_TOKEN", API)
    monkeypatch.setenv("IMAGEBLUR_REVIEWER_TOKEN", REVIEWER)
    assert load_settings().reviewers() == {"reviewer": REVIEWER}
    monkeypatch.setenv("IMAGEBLUR_REVIEWER_TOKENS", f"photo-desk:{OTHER}")
    with pytest.raises(SettingsError, match="not both"):
        load_settings()
    monkeypatch.delenv("IMAGEBLUR_REVIEWER_TOKENS")
    monkeypatch.setenv("IMAGEBLUR_REVIEWER_TOKEN", API)
    with pytest.raises(SettingsError, match="must differ"):
        load_settings()
    monkeypatch.setenv("IMAGEBLUR_REVIEWER_TOKEN", "short")
    with pytest.raises(SettingsError, match="reviewer_token"):
        load_settings()


@pytest.mark.parametrize("setting", ["IMAGEBLUR_REVIEWER_TOKEN", "IMAGEBLUR_REVIEWER_TOKENS"])
def test_reviewer_tokens_need_an_api_token(monkeypatch: pytest.MonkeyPatch, setting: str) -> None:
    value = REVIEWER if setting.endswith("TOKEN") else f"photo-desk:{REVIEWER}"
    monkeypatch.setenv(setting, value)
    with pytest.raises(SettingsError, match="IMAGEBLUR_API_TOKEN"):
        load_settings()


def test_a_reviewer_token_must_differ_from_the_metrics_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IMAGEBLUR_API_TOKEN", API)
    monkeypatch.setenv("IMAGEBLUR_METRICS_TOKEN", OTHER)
    monkeypatch.setenv("IMAGEBLUR_REVIEWER_TOKENS", f"photo-desk:{OTHER}")
    with pytest.raises(SettingsError, match="IMAGEBLUR_METRICS_TOKEN"):
        load_settings()


def test_the_api_token_is_a_comma_separated_list_of_good_tokens(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IMAGEBLUR_API_TOKEN", f"{API},{OTHER}")
    monkeypatch.setenv("IMAGEBLUR_REVIEWER_TOKENS", f"photo-desk:{REVIEWER}")
    assert load_settings().api_tokens() == [API, OTHER]
    monkeypatch.setenv("IMAGEBLUR_REVIEWER_TOKENS", f"photo-desk:{OTHER}")
    with pytest.raises(SettingsError, match="must differ"):
        load_settings()  # the second API token too
    monkeypatch.delenv("IMAGEBLUR_REVIEWER_TOKENS")
    for value, why in [(f"{API},", "token 2 of 2"), (f"{API},short", "token 2 of 2")]:
        monkeypatch.setenv("IMAGEBLUR_API_TOKEN", value)
        with pytest.raises(SettingsError, match="IMAGEBLUR_API_TOKEN") as caught:
            load_settings()
        assert why in str(caught.value) and API not in str(caught.value)


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("IMAGEBLUR_API_TOKEN", "CHANGE_ME-to-a-long-random-token"),
        ("IMAGEBLUR_METRICS_TOKEN", "metrics-CHANGE_ME-0123456789"),
        ("IMAGEBLUR_ORIGINALS_KEY", "a-key-CHANGE_ME-now"),
        ("IMAGEBLUR_POSTGRES_DSN", "postgresql://imageblur:CHANGE_ME@db/imageblur"),
        ("IMAGEBLUR_RABBITMQ_URL", "amqp://imageblur:CHANGE_ME@mq:5672/%2F"),
        ("IMAGEBLUR_S3_SECRET_ACCESS_KEY", "s3-CHANGE_ME-secret"),
    ],
)
def test_a_placeholder_secret_is_refused_naming_its_setting(
    monkeypatch: pytest.MonkeyPatch, setting: str, value: str
) -> None:
    monkeypatch.setenv(setting, value)
    with pytest.raises(SettingsError, match=f"{setting}.*placeholder CHANGE_ME") as caught:
        load_settings()
    assert value not in str(caught.value)


def test_review_without_tokens_loads_for_the_commands_that_serve_nobody(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker, `migrate`, `blur` and `config` need no token in review mode, nor on any
    address: only `api` and `serve` refuse to start so (startup.py)."""
    monkeypatch.setenv("IMAGEBLUR_REVIEW", "required")
    monkeypatch.setenv("IMAGEBLUR_ORIGINALS_KEY", KEY)
    monkeypatch.setenv("IMAGEBLUR_HOST", "0.0.0.0")
    s = load_settings()
    assert (s.review, s.host, s.api_token, s.allow_anonymous) == (
        "required",
        "0.0.0.0",
        None,
        False,
    )
    with pytest.raises(SettingsError, match="IMAGEBLUR_REVIEWER_TOKENS") as caught:
        check_api(s)
    assert "IMAGEBLUR_ALLOW_ANONYMOUS" in str(caught.value)


def _serving(monkeypatch: pytest.MonkeyPatch, **env: str) -> str | None:
    for name, value in env.items():
        monkeypatch.setenv(f"IMAGEBLUR_{name.upper()}", value)
    try:
        check_api(load_settings())
    except SettingsError as exc:
        return str(exc)
    return None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.7", "imageblur.example.org"])
def test_an_api_off_loopback_needs_a_token_or_the_anonymous_switch(
    monkeypatch: pytest.MonkeyPatch, host: str
) -> None:
    refused = _serving(monkeypatch, host=host)
    assert refused is not None
    assert "IMAGEBLUR_API_TOKEN" in refused and "IMAGEBLUR_ALLOW_ANONYMOUS" in refused
    assert _serving(monkeypatch, allow_anonymous="true") is None
    monkeypatch.delenv("IMAGEBLUR_ALLOW_ANONYMOUS")
    assert _serving(monkeypatch, api_token=API) is None


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.53", "::1", "[::1]", "localhost"])
def test_an_api_on_loopback_may_run_without_a_token(
    monkeypatch: pytest.MonkeyPatch, host: str
) -> None:
    assert _serving(monkeypatch, host=host) is None


def test_review_needs_the_api_token_and_reviewers_whatever_the_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    review = {"review": "required", "originals_key": KEY, "allow_anonymous": "true"}
    refused = _serving(monkeypatch, **review)
    assert refused is not None and "IMAGEBLUR_REVIEW=required" in refused
    assert "IMAGEBLUR_API_TOKEN" in refused and "IMAGEBLUR_REVIEWER_TOKENS" in refused
    assert _serving(monkeypatch, api_token=API) is not None  # no reviewer yet
    assert _serving(monkeypatch, reviewer_tokens=f"photo-desk:{REVIEWER}") is None
    monkeypatch.delenv("IMAGEBLUR_REVIEWER_TOKENS")
    assert _serving(monkeypatch, reviewer_token=REVIEWER) is None


def test_a_worker_metrics_port_off_loopback_needs_its_token_or_the_switch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IMAGEBLUR_HOST", "0.0.0.0")
    check_worker(load_settings())  # no metrics port: nothing listens
    monkeypatch.setenv("IMAGEBLUR_METRICS_PORT", "9100")
    with pytest.raises(SettingsError) as caught:
        check_worker(load_settings())
    assert "IMAGEBLUR_METRICS_TOKEN" in str(caught.value)
    assert "IMAGEBLUR_ALLOW_ANONYMOUS" in str(caught.value)
    monkeypatch.setenv("IMAGEBLUR_METRICS_TOKEN", OTHER)
    check_worker(load_settings())
    monkeypatch.delenv("IMAGEBLUR_METRICS_TOKEN")
    monkeypatch.setenv("IMAGEBLUR_ALLOW_ANONYMOUS", "true")
    check_worker(load_settings())
    monkeypatch.setenv("IMAGEBLUR_ALLOW_ANONYMOUS", "false")
    monkeypatch.setenv("IMAGEBLUR_HOST", "127.0.0.1")
    check_worker(load_settings())


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


# What `thorough` sets for each brought family (docs/detection.md, "Brought families"):
# threshold, mirrored passes, small-face pass.
BROUGHT_THOROUGH = {
    "retinaface": (0.65, 1, None),
    "scrfd": (0.65, 1, None),
    "yolo": (0.5, 0, None),  # not measured: looks once
}


@pytest.mark.parametrize("family", sorted(BROUGHT_THOROUGH))
def test_each_brought_family_gets_its_own_thorough_looks_and_threshold(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, family: str
) -> None:
    model = tmp_path / "r.onnx"
    model.write_bytes(b"x")
    monkeypatch.setenv("IMAGEBLUR_DETECTION_PRESET", "thorough")
    brought = {"detector": family, "model_path": model, "model_sha256": "0" * 64}
    if family == "yolo":
        brought["detector_classes"] = "0=face"
    s = load_settings(**brought)
    looks = (s.detection_threshold, s.detection_mirrored_passes)
    assert (*looks, s.detection_small_face_pass_scale) == BROUGHT_THOROUGH[family]
    # One threshold at every size: not CenterFace's size-dependent ones.
    assert (s.detection_small_threshold, s.detection_large_threshold) == (None, None)
    assert (s.mask_scale, s.mask_margin_px) == (1.1, 12.0)  # the preset's mask still
    explicit = load_settings(**brought, detection_threshold=0.6, detection_mirrored_passes=2)
    assert (explicit.detection_threshold, explicit.detection_mirrored_passes) == (0.6, 2)


WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"s" * 32).decode()


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"webhook_url": "http://hooks.example/in"}, "needs IMAGEBLUR_WEBHOOK_SECRET"),
        ({"webhook_url": "ftp://hooks.example/in", "webhook_secret": WEBHOOK_SECRET}, "http://"),
        (
            {"webhook_url": "http://u:p@hooks.example/", "webhook_secret": WEBHOOK_SECRET},
            "user name or password",
        ),
        ({"webhook_secret": "whsec_" + base64.b64encode(b"s" * 16).decode()}, "16 bytes"),
        ({"webhook_secret": "s3cret-but-not-whsec"}, "does not start with whsec_"),
    ],
)
def test_webhook_settings_are_checked_at_start_without_showing_the_secret(
    monkeypatch: pytest.MonkeyPatch, settings: dict[str, str], says: str
) -> None:
    monkeypatch.delenv("IMAGEBLUR_CONFIG", raising=False)
    with pytest.raises(SettingsError, match=says) as caught:
        load_settings(**settings)
    secret = settings.get("webhook_secret", "")
    assert not secret or secret.removeprefix("whsec_") not in str(caught.value)


def test_a_webhook_url_with_its_secret_loads_and_blank_is_unset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("IMAGEBLUR_CONFIG", raising=False)
    monkeypatch.setenv("IMAGEBLUR_WEBHOOK_URL", "http://10.0.0.5:8000/hook")
    monkeypatch.setenv("IMAGEBLUR_WEBHOOK_SECRET", f"{WEBHOOK_SECRET} {WEBHOOK_SECRET}")
    s = load_settings()
    assert s.webhook_keys() == [b"s" * 32, b"s" * 32]
    assert WEBHOOK_SECRET not in str(s.masked())
    assert (s.webhook_allowed_hosts, s.webhook_patience_s) == ("*", 86400.0)
    monkeypatch.setenv("IMAGEBLUR_WEBHOOK_URL", " ")
    monkeypatch.setenv("IMAGEBLUR_WEBHOOK_SECRET", "")
    unset = load_settings()
    assert (unset.webhook_url, unset.webhook_keys()) == (None, [])
