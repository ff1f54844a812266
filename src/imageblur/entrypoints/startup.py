"""What `api`, `serve` and `worker` refuse to start with: the policies that guard people
fail closed, naming the settings to set (STYLE.md 19). Checked at start of these
commands only, not when settings load, so `migrate`, `blur` and `config` run whatever
the listen address or review mode."""

from __future__ import annotations

from imageblur.config import Settings, SettingsError
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
    """Refuse a worker whose metrics port would answer anyone on the network."""
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


def _refuse(problems: list[str]) -> None:
    if problems:
        raise SettingsError("refusing to start: " + "; ".join(problems))
