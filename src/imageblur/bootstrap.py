"""The only place that maps settings to adapters and use cases. Nothing connects at
import time, and no adapter sees the settings: each takes its options as arguments.

Back ends are chosen from closed sets; the drivers of the distributed back ends are
imported only when selected, so the embedded install does not need them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Literal

from imageblur import upload_options
from imageblur.admission import StreamSlots, UploadGate
from imageblur.anonymizer import AnonymizeOptions, Anonymizer
from imageblur.backends import Backends, Repository
from imageblur.batches.gauges import BatchCollector
from imageblur.batches.model import Location
from imageblur.batches.pump import BatchPump, PumpSettings
from imageblur.batches.rules import BatchRules, parse_list, rules_from
from imageblur.batches.runner import BatchRunner
from imageblur.batches.service import BatchService
from imageblur.config import Settings, SettingsError
from imageblur.detection.presets import PresetDetectors
from imageblur.domain import VIDEO_STATUSES, Status
from imageblur.jobs import JobProcessor, RetryPolicy
from imageblur.keycheck import KeyCheck
from imageblur.logs import get_logger
from imageblur.metadata import parse_policy
from imageblur.metrics import Metrics, count_backend_errors
from imageblur.pixel_budget import PixelBudget
from imageblur.ports import FaceDetector, JobQueue, ObjectStore, VideoAnonymizer, VideoProbe
from imageblur.reconciler import Reconciler
from imageblur.review import ReviewService
from imageblur.services import ImageService
from imageblur.videos import VideoService
from imageblur.webhooks.addresses import HostPolicy
from imageblur.webhooks.sender import Render, RenderBatch, SenderTerms, WebhookSender
from imageblur.workdir import WorkDir

if TYPE_CHECKING:
    from imageblur.adapters.batch_locations import BatchLocations
    from imageblur.adapters.encrypted_store import EncryptedStore
    from imageblur.video.pipeline import VideoOptions

log = get_logger(__name__)

# A job's lease is renewed every third of its length while it runs: whatever the job
# does for this many lease lengths (20 min at the default 300 s; the largest photo takes
# well under a minute), then only while it makes progress, up to a ceiling its size and
# measured rate give (`leases`): a job hung in native code must not hold its lease for
# ever.
LEASE_RENEWALS_PER_LEASE = 3
MAX_LEASE_RENEWALS = 4
# Between renewals a job's record is read this often: a deleted picture's job stops
# within about this long, plus the time to its next checkpoint.
LEASE_CHECK_S = 2.0
# Uploads in hand per upload being decoded, before the API answers 503 `overloaded`.
UPLOADS_IN_HAND_PER_CHECK = 4
# The picture gauges read the database at most this often, however often it is scraped.
PICTURE_GAUGES_EVERY_S = 15.0


def build_repository(settings: Settings) -> Repository:
    if settings.repository == "postgres":
        from imageblur.adapters.postgres_repo import PostgresImageRepository

        return PostgresImageRepository(
            settings.postgres_dsn.get_secret_value(),
            schema=settings.postgres_schema,
            pool_min=settings.postgres_pool_min,
            pool_max=settings.postgres_pool_max,
            timeout_s=settings.postgres_timeout_s,
            webhook_url=settings.webhook_url,
        )
    from imageblur.adapters.sqlite_repo import SqliteImageRepository

    return SqliteImageRepository(settings.sqlite_file, webhook_url=settings.webhook_url)


def build_store(settings: Settings, role: Literal["input", "output"]) -> ObjectStore:
    if settings.store == "s3":
        from imageblur.adapters.s3_store import S3ObjectStore

        key_id, secret = settings.s3_access_key_id, settings.s3_secret_access_key
        return S3ObjectStore(
            bucket=settings.s3_input_bucket if role == "input" else settings.s3_output_bucket,
            prefix=settings.s3_input_prefix if role == "input" else settings.s3_output_prefix,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=key_id.get_secret_value() if key_id else None,
            secret_access_key=secret.get_secret_value() if secret else None,
            addressing_style=settings.s3_addressing_style,
            create_bucket=settings.s3_create_buckets,
            timeout_s=settings.s3_timeout_s,
            # Both buckets: a deleted picture's result must go as surely as its original.
            delete_all_versions=settings.s3_delete_all_versions,
        )
    from imageblur.adapters.local_store import LocalObjectStore

    folder = "originals" if role == "input" else "results"
    return LocalObjectStore(settings.data_dir / folder)


def build_queue(settings: Settings) -> JobQueue:
    if settings.queue == "rabbitmq":
        from imageblur.adapters.rabbitmq_queue import RabbitMQJobQueue

        return RabbitMQJobQueue(
            settings.rabbitmq_url.get_secret_value(),
            queue=settings.rabbitmq_queue,
            # All worker threads of a process share one consumer channel: with fewer
            # unacked deliveries allowed than threads, some threads would sit idle.
            prefetch=max(settings.rabbitmq_prefetch, settings.worker_threads),
            queue_type=settings.rabbitmq_queue_type,
            timeout_s=settings.rabbitmq_timeout_s,
            # A worker pool scaled apart consumes only its kinds' queues; publishing
            # (the API's, the reconciler's) reaches every kind's either way.
            consume=settings.job_kinds(),
        )
    from imageblur.adapters.memory_queue import MemoryJobQueue

    return MemoryJobQueue()


def build_originals(settings: Settings) -> EncryptedStore:
    """The originals' store, sealing new originals when an originals key is set. Wrapped
    even without one: a sealed original is then refused as unreadable, never taken for
    an image. Results are never encrypted: they are what gets published."""
    from imageblur.adapters.encrypted_store import EncryptedStore, Keyring

    current, old = settings.originals_keys()
    return EncryptedStore(
        build_store(settings, "input"),
        Keyring(current, old),
        allow_plaintext=settings.originals_allow_plaintext,
    )


def build_backends(settings: Settings, originals: ObjectStore | None = None) -> Backends:
    return Backends(
        repository=build_repository(settings),
        originals=originals if originals is not None else build_originals(settings),
        results=build_store(settings, "output"),
        queue=build_queue(settings),
    )


def build_detector(settings: Settings) -> FaceDetector:
    """The main detector and the extra ones; `ModelError` names the setting at fault."""
    from imageblur.config import DetectorSpec, detector_setting_names
    from imageblur.detection.factory import DetectorChoice, make_detector
    from imageblur.detection.families import CLASS_MAPPED, parse_classes

    main = DetectorSpec(
        family=settings.detector,
        model_path=settings.model_path,
        model_sha256=settings.model_sha256,
        threshold=settings.detection_threshold,
        classes=settings.detector_classes,
    )
    choices = []
    for index, spec in enumerate([main, *settings.extra_detectors]):
        path_name, sha_name, _ = detector_setting_names(index - 1 if index else None)
        choices.append(
            DetectorChoice(
                family=spec.family,
                threshold=spec.threshold,
                model_path=spec.model_path,
                model_sha256=spec.model_sha256,
                classes=parse_classes(spec.classes) if spec.family == CLASS_MAPPED else {},
                # The size-dependent thresholds (the detection preset's) are the main
                # detector's; CenterFace applies them, the other families ignore them
                # (their scores were never measured by size).
                small_threshold=None if index else settings.detection_small_threshold,
                large_threshold=None if index else settings.detection_large_threshold,
                # The preset's extra look is the main detector's, as its thresholds are.
                mirrored_passes=0 if index else settings.detection_mirrored_passes,
                small_pass_scale=None if index else settings.detection_small_face_pass_scale,
                precision=settings.detection_precision,
                path_setting=path_name,
                sha256_setting=sha_name,
            )
        )
    return make_detector(
        choices,
        threads=settings.detector_threads,
        runtime=settings.detector_runtime,
        uncertain_floor=settings.uncertain_floor,
    )


def worker_anonymizer(
    settings: Settings, detector: FaceDetector, detectors: PresetDetectors | None = None
) -> Anonymizer:
    """The worker's anonymizer: its job threads share one pixel budget, and `detector`
    (the server's preset's) and any other preset's an upload asks for (`detectors`, when
    the process's videos share them; else its own)."""
    budget = PixelBudget(settings.worker_pixel_budget)
    return Anonymizer(
        detector,
        anonymize_options(settings),
        budget=budget,
        presets=settings.preset_choice,
        detectors=detectors or preset_detectors(settings, detector),
    )


def preset_detectors(settings: Settings, detector: FaceDetector) -> PresetDetectors:
    """An upload's preset looks with `detector` unless its extra looks or precision
    differ from the server's preset's; then with the detector a server started with that
    preset loads, loaded on first use (it costs memory: docs/detection.md)."""
    return PresetDetectors(
        detector,
        server_preset=settings.detection_preset,
        looks=lambda name: _looks(settings.with_preset(name)),
        load=lambda name: _preset_detector(settings, name),
    )


def _looks(settings: Settings) -> tuple[int, float | None, str]:
    """What sets a preset's detector apart; thresholds do not (they are set per call)."""
    s = settings
    return (s.detection_mirrored_passes, s.detection_small_face_pass_scale, s.detection_precision)


def _preset_detector(settings: Settings, name: str) -> FaceDetector:
    log.info("detector.loading", preset=name, reason="an upload's preset looks otherwise")
    return build_detector(settings.with_preset(name))


def video_options(settings: Settings) -> VideoOptions:
    """What the settings decide for a video: its limits, and the pictures' look."""
    from imageblur.domain import MaskGeometry
    from imageblur.video.pipeline import VideoOptions
    from imageblur.video.probe import VideoLimits
    from imageblur.video.render_pass import Look

    geometry = MaskGeometry(
        scale=settings.mask_scale, margin_px=settings.mask_margin_px, shape=settings.mask_shape
    )
    return VideoOptions(
        limits=VideoLimits(
            max_seconds=settings.max_video_seconds, max_pixels=settings.max_video_pixels
        ),
        look=Look(mode=settings.blur_mode, geometry=geometry),
        detect_stride=settings.video_detect_stride,
        tracking=settings.video_tracking,
        second_look=settings.video_second_look,
        keep_metadata=parse_policy(settings.keep_metadata),
    )


def anonymize_options(settings: Settings) -> AnonymizeOptions:
    return AnonymizeOptions(
        mode=settings.blur_mode,
        shape=settings.mask_shape,
        mask_scale=settings.mask_scale,
        margin_px=settings.mask_margin_px,
        jpeg_quality=settings.jpeg_quality,
        max_pixels=settings.max_pixels,
        keep_metadata=parse_policy(settings.keep_metadata),
        output_format=settings.output_format,
        max_jpeg_scans=settings.max_jpeg_scans,
    )


def build_gate(settings: Settings) -> UploadGate:
    checks = settings.max_concurrent_checks
    return UploadGate(
        max_checking=checks,
        max_in_hand=UPLOADS_IN_HAND_PER_CHECK * checks,
        pixel_budget=settings.api_pixel_budget,
    )


def build_images(settings: Settings, backends: Backends, gate: UploadGate) -> ImageService:
    presigned = settings.result_delivery == "presigned"
    return ImageService(
        backends=backends,
        gate=gate,
        max_pixels=settings.max_pixels,
        max_jpeg_scans=settings.max_jpeg_scans,
        output_format=settings.output_format,
        presigned_ttl_s=settings.presigned_ttl_s if presigned else None,
    )


@dataclass(frozen=True, slots=True)
class VideoParts:
    """The video pipeline's two faces the service uses: the probe (the API's check
    before anything is stored) and the anonymizer (the worker's job; None in a process
    that runs no jobs). `build` makes them from `imageblur.video` (`video_parts`); a
    test may give others."""

    probe: VideoProbe
    anonymizer: VideoAnonymizer | None


def video_parts(
    settings: Settings, detector: FaceDetector | None, detectors: PresetDetectors | None = None
) -> VideoParts:
    """The pipeline of `imageblur.video` behind the ports (`video.service_parts`);
    imported here only, when videos are on. `detectors`: each preset's detector, as the
    process's pictures have them (else the video's own)."""
    from imageblur.video.service_parts import PipelineAnonymizer, PipelineProbe

    options = video_options(settings)
    anonymizer = None
    if detector is not None:
        anonymizer = PipelineAnonymizer(
            detector,
            options,
            presets=settings.preset_choice,
            detectors=detectors or preset_detectors(settings, detector),
        )
    return VideoParts(probe=PipelineProbe(options), anonymizer=anonymizer)


def build_videos(
    settings: Settings, backends: Backends, parts: VideoParts | None
) -> VideoService | None:
    """The video use cases, or None with IMAGEBLUR_VIDEO off."""
    if not settings.video or parts is None:
        return None
    presigned = settings.result_delivery == "presigned"
    return VideoService(
        backends=backends,
        probe=parts.probe,
        playback_secret=settings.playback_secret(),
        playback_ttl_s=settings.playback_ttl_s,
        presigned_ttl_s=settings.presigned_ttl_s if presigned else None,
    )


def build_review(settings: Settings, backends: Backends) -> ReviewService:
    return ReviewService(backends=backends, keep_originals=settings.keep_originals)


def build_processor(
    settings: Settings,
    backends: Backends,
    detector: FaceDetector,
    *,
    owner: str | None = None,
    on_lease_renewed: Callable[[], None] | None = None,
    on_stuck: Callable[[], None] | None = None,
    metrics: Metrics | None = None,
    work_dir: WorkDir | None = None,
    video: VideoAnonymizer | None = None,
    detectors: PresetDetectors | None = None,
) -> JobProcessor:
    s = settings
    return JobProcessor(
        backends=backends,
        anonymizer=worker_anonymizer(s, detector, detectors),
        video=video if s.video else None,
        retry=RetryPolicy(
            max_attempts=s.max_attempts,
            base_delay_s=s.retry_base_delay_s,
            max_delay_s=s.retry_max_delay_s,
        ),
        lease_s=s.lease_s,
        lease_renew_interval_s=s.lease_s / LEASE_RENEWALS_PER_LEASE,
        max_lease_renewals=MAX_LEASE_RENEWALS,
        lease_check_interval_s=LEASE_CHECK_S,
        outage_patience_s=s.outage_patience_s,
        keep_originals=s.keep_originals,
        review_ttl_s=s.review_ttl_s if s.review == "required" else None,
        requested_review_ttl_s=s.review_ttl_s,
        owner=owner,
        on_lease_renewed=on_lease_renewed,
        stuck_s=s.job_stuck_s,
        on_stuck=on_stuck,
        metrics=metrics,
        work_dir=work_dir,
    )


def open_work_dir(settings: Settings) -> WorkDir:
    """This worker's work folder, taken, and what crashed workers left removed; a
    folder that cannot be made stops the start with a message naming the setting."""
    work = WorkDir(settings.work_root, max_bytes=settings.work_dir_max_bytes)
    try:
        work.open()
    except OSError as exc:
        raise SettingsError(
            f"cannot use the work dir {work.space} (IMAGEBLUR_WORK_DIR): {exc.strerror or exc}"
        ) from None
    log.info("work_dir.opened", folder=str(work.folder), max_bytes=settings.work_dir_max_bytes)
    return work


def build_reconciler(settings: Settings, backends: Backends) -> Reconciler:
    s = settings
    return Reconciler(
        backends=backends,
        pending_grace_s=s.pending_grace_s,
        queued_grace_s=s.queued_grace_s,
        orphan_grace_s=s.orphan_grace_s,
        keep_originals=s.keep_originals,
        # The collecting process renews its lease every gc interval; half an interval
        # of slack keeps a slow pass from handing collection to a second process.
        gc_lease_s=1.5 * s.gc_interval_s,
    )


def build_sender(
    settings: Settings,
    backends: Backends,
    metrics: Metrics,
    *,
    render: Render,
    owner: str,
    render_batch: RenderBatch | None = None,
) -> WebhookSender | None:
    """A worker's webhook sender, or None without a signing secret (no webhooks: the
    repository writes no outbox rows without IMAGEBLUR_WEBHOOK_URL, which needs one)."""
    keys = settings.webhook_keys()
    if not keys:
        return None
    terms = SenderTerms(
        keys=keys,
        operator_url=settings.webhook_url,
        allowed=HostPolicy.parse(settings.webhook_allowed_hosts),
        patience_s=settings.webhook_patience_s,
        lease_s=settings.webhook_lease_s,
        retention_s=settings.webhook_retention_s,
        concurrency=settings.webhook_concurrency,
    )
    return WebhookSender(
        repository=backends.repository,
        render=render,
        terms=terms,
        owner=owner,
        metrics=metrics,
        render_batch=render_batch,
    )


@dataclass
class Container:
    """Everything a process needs, built once and closed once."""

    settings: Settings
    backends: Backends
    gate: UploadGate
    images: ImageService
    review: ReviewService
    detector: FaceDetector | None = None
    metrics: Metrics = field(default_factory=Metrics)
    # Whether the originals open (readiness `originals_key`); None: not checked.
    keys: KeyCheck | None = None
    # A worker's work folders (None: a process that runs no jobs).
    work: WorkDir | None = None
    # The API's large uploads streamed to the store at once (`streamed_upload`).
    streams: StreamSlots = field(default_factory=lambda: StreamSlots(1))
    # The video use cases (None: IMAGEBLUR_VIDEO off) and the pipeline behind them.
    videos: VideoService | None = None
    video_parts: VideoParts | None = None
    # Each preset's detector, shared by pictures and videos (a second copy of a model
    # costs hundreds of MB); None: a process without a detector.
    detectors: PresetDetectors | None = None
    # The bucket batches' use cases (the API's).
    batches: BatchService | None = None
    _closed: bool = field(default=False, repr=False)

    def processor(
        self,
        *,
        owner: str | None = None,
        on_lease_renewed: Callable[[], None] | None = None,
        on_stuck: Callable[[], None] | None = None,
    ) -> JobProcessor:
        if self.detector is None:
            raise RuntimeError("this container was built without a face detector")
        return build_processor(
            self.settings,
            self.backends,
            self.detector,
            owner=owner,
            on_lease_renewed=on_lease_renewed,
            on_stuck=on_stuck,
            metrics=self.metrics,
            work_dir=self.work,
            video=self.video_parts.anonymizer if self.video_parts else None,
            detectors=self.detectors,
        )

    def export_picture_gauges(self) -> None:
        """The API process exports the picture gauges (one reader per process)."""
        self.metrics.watch_pictures(
            self.backends.repository.picture_stats,
            statuses=[status.value for status in Status if status not in VIDEO_STATUSES],
            every_s=PICTURE_GAUGES_EVERY_S,
        )
        repository = self.backends.repository
        self.metrics.registry.register(
            BatchCollector(
                lambda: [b for o in repository.open_batches() if (b := repository.get_batch(o.id))],
                every_s=PICTURE_GAUGES_EVERY_S,
            )
        )

    def reconciler(self) -> Reconciler:
        return build_reconciler(self.settings, self.backends)

    def batch_pump(self, *, owner: str) -> BatchPump:
        return build_batch_pump(self.settings, self.backends, owner=owner)

    def batch_runner(self, *, owner: str) -> BatchRunner:
        if self.detector is None:
            raise RuntimeError("this container was built without a face detector")
        return build_batch_runner(self.settings, self.backends, self.detector, owner=owner)

    def sender(
        self, *, render: Render, owner: str, render_batch: RenderBatch | None = None
    ) -> WebhookSender | None:
        """The webhook sender of a worker process (None: webhooks are off)."""
        return build_sender(
            self.settings,
            self.backends,
            self.metrics,
            render=render,
            owner=owner,
            render_batch=render_batch,
        )

    def key_problem(self) -> str | None:
        """None when this process can open the originals, else why (key ids only)."""
        return None if self.keys is None else self.keys.problem()

    @property
    def embedded_queue(self) -> bool:
        """True when queued jobs die with the process (the reconciler must re-publish)."""
        return self.settings.queue == "memory"

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.work is not None:
            self.work.close()
        self.backends.close()


def build(
    settings: Settings,
    *,
    with_detector: bool,
    metrics: Metrics | None = None,
    video: VideoParts | None = None,
) -> Container:
    """Wire the process. With `with_detector` the face model is loaded (workers only).
    `metrics`: the process's collectors, when the API made them before the container.
    `video`: the video pipeline (`VideoParts`) with IMAGEBLUR_VIDEO on; by default
    `imageblur.video`'s (`video_parts`)."""
    detector = build_detector(settings) if with_detector else None
    metrics = metrics if metrics is not None else Metrics()
    originals = build_originals(settings)
    backends = count_backend_errors(build_backends(settings, originals), metrics)
    if settings.repository == "sqlite":
        # A local file has a single owner: create/upgrade it on start. PostgreSQL is
        # migrated by the explicit `imageblur migrate` step (a Job on Kubernetes).
        try:
            backends.repository.migrate()
        except BaseException:
            backends.close()
            raise
    gate = build_gate(settings)
    detectors = None if detector is None else preset_detectors(settings, detector)
    if settings.video and video is None:
        video = video_parts(settings, detector, detectors)
    try:
        videos = build_videos(settings, backends, video)
        work = open_work_dir(settings) if with_detector else None
    except BaseException:
        backends.close()
        raise
    return Container(
        settings=settings,
        backends=backends,
        gate=gate,
        images=build_images(settings, backends, gate),
        review=build_review(settings, backends),
        detector=detector,
        metrics=metrics,
        keys=_checked_keys(originals),
        work=work,
        streams=StreamSlots(settings.max_streamed_uploads),
        videos=videos,
        video_parts=video,
        detectors=detectors,
        batches=build_batch_service(settings, backends),
    )


def _checked_keys(originals: EncryptedStore) -> KeyCheck:
    """The key check, looked at once at start: the current key's check object is written
    then, and a key that does not open shows in the log before the first probe."""
    keys = KeyCheck(originals)
    keys.problem()
    return keys


# --- bucket batches (issue 27) ---------------------------------------------------------


def build_batch_locations(settings: Settings) -> BatchLocations:
    from imageblur.adapters.batch_locations import BatchLocations

    s = settings
    key_id, secret = s.s3_access_key_id, s.s3_secret_access_key
    return BatchLocations(
        endpoint_url=s.s3_endpoint_url,
        region=s.s3_region,
        access_key_id=key_id.get_secret_value() if key_id else None,
        secret_access_key=secret.get_secret_value() if secret else None,
        addressing_style=s.s3_addressing_style,
        timeout_s=s.s3_timeout_s,
    )


def batch_rules(settings: Settings) -> BatchRules:
    """Where batches may read and write: never where the service keeps its own objects
    (its buckets and prefixes, or the embedded default's data folder)."""
    s = settings
    own: list[Location]
    if s.store == "s3":
        own = [
            Location("s3", s.s3_input_bucket, s.s3_input_prefix),
            Location("s3", s.s3_output_bucket, s.s3_output_prefix),
        ]
    else:
        own = [Location("file", str(s.data_dir.resolve()), "")]
    return rules_from(parse_list(s.batch_buckets), parse_list(s.batch_roots), own)


def build_batch_service(settings: Settings, backends: Backends) -> BatchService:
    return BatchService(
        backends.repository,
        build_batch_locations(settings),
        batch_rules(settings),
        max_batches=settings.max_batches,
        allowed_options=settings.allowed_upload_options(),
        check_callback=partial(
            upload_options.check_callback,
            policy=settings.webhook_policy(),
            signing=settings.webhook_secret is not None,
        ),
    )


def build_batch_pump(settings: Settings, backends: Backends, *, owner: str) -> BatchPump:
    s = settings
    return BatchPump(
        backends.repository,
        backends.queue,
        build_batch_locations(s),
        owner=owner,
        settings=PumpSettings(
            window=s.batch_window,
            page_size=s.batch_page_size,
            queued_grace_s=s.queued_grace_s,
            lease_s=max(30.0, 3 * s.batch_pump_interval_s),
        ),
    )


def build_batch_runner(
    settings: Settings, backends: Backends, detector: FaceDetector, *, owner: str
) -> BatchRunner:
    s = settings
    retry = RetryPolicy(
        max_attempts=s.max_attempts,
        base_delay_s=s.retry_base_delay_s,
        max_delay_s=s.retry_max_delay_s,
    )
    return BatchRunner(
        backends.repository,
        backends.queue,
        build_batch_locations(s),
        worker_anonymizer(s, detector),
        owner=owner,
        lease_s=s.lease_s,
        max_bytes=s.max_upload_bytes,
        max_attempts=s.max_attempts,
        retry_delay_s=retry.delay_s,
    )
