"""What `api`, `serve` and `worker` refuse to start with: the policies that guard people
fail closed, naming the settings to set (STYLE.md 19). Checked at start of these
commands only, not when settings load, so `migrate`, `blur` and `config` run whatever
the listen address or review mode."""

from __future__ import annotations

from imageblur.config import Settings, SettingsError
from imageblur.domain import JOB_KINDS
from imageblur.logs import get_logger
from imageblur.tokens import is_loopback

log = get_logger(__name__)


def check_api(settings: Settings) -> None:
    """Refuse an API (`api`, `serve`) that would let an anonymous caller see or release
    originals, or answer anyone on the network without a token."""
    problems = []
    if settings.review == "required" and (settings.api_token is None or not settings.reviewers()):
        problems.append(
            "IMAGEBLUR_REVIEW=required needs IMAGEBLUR_API_TOKEN and named reviewers "
            "(IMAGEBLUR_REVIEWER_TOKENS=name:token,...): a reviewer sees originals and "
            "releases pictures, so an anonymous caller must never be one"
        )
    if (
        not is_loopback(settings.host)
        and settings.api_token is None
        and not settings.allow_anonymous
    ):
        problems.append(
            f"IMAGEBLUR_HOST={settings.host} is not a loopback address: set "
            "IMAGEBLUR_API_TOKEN, or IMAGEBLUR_ALLOW_ANONYMOUS=true to let anyone who "
            "reaches the port use the API"
        )
    _refuse(problems)
    if not is_loopback(settings.host) and settings.api_token is None:
        log.warning("api.open_to_anyone", host=settings.host, setting="IMAGEBLUR_ALLOW_ANONYMOUS")


def check_worker(settings: Settings) -> None:
    """Refuse a worker whose metrics port would answer anyone on the network, or that
    would take no job kind; warn when its shutdown grace is shorter than its longest
    kind's jobs (a scale-in or a rollout would cut them)."""
    if not settings.job_kinds():
        _refuse(
            [
                f"IMAGEBLUR_WORKER_KINDS={settings.worker_kinds} selects no job kind of "
                "this release that is enabled here (IMAGEBLUR_VIDEO for `video`): the "
                "worker would take nothing"
            ]
        )
    longest = max((JOB_KINDS[k].longest_s or 0.0 for k in settings.job_kinds()), default=0.0)
    if longest > settings.shutdown_grace_s:
        log.warning(
            "worker.grace_shorter_than_its_jobs",
            shutdown_grace_s=settings.shutdown_grace_s,
            longest_job_s=longest,
        )
    if (
        settings.metrics_port is not None
        and not is_loopback(settings.host)
        and settings.metrics_token is None
        and not settings.allow_anonymous
    ):
        _refuse(
            [
                f"the worker's metrics port listens on IMAGEBLUR_HOST={settings.host}, not a "
                "loopback address: set IMAGEBLUR_METRICS_TOKEN, or "
                "IMAGEBLUR_ALLOW_ANONYMOUS=true to let anyone who reaches it read the metrics"
            ]
        )


def check_embedded(settings: Settings) -> None:
    """Refuse `serve` on the in-process queue with a worker that leaves kinds untaken:
    nothing else consumes that queue, so their jobs would wait for ever."""
    if settings.queue == "memory" and settings.job_kinds() != settings.enabled_kinds():
        _refuse(
            [
                f"IMAGEBLUR_WORKER_KINDS={settings.worker_kinds}: `serve` on the in-process "
                "queue must take every job kind (unset it)"
            ]
        )


def _refuse(problems: list[str]) -> None:
    if problems:
        raise SettingsError("refusing to start: " + "; ".join(problems))
