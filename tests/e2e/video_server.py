"""`imageblur serve` with the holding copy-through video pipeline (tests/video_copy.py),
as a server process for the tests that act while a video job runs: the settings from
the environment as the CLI reads them, the app and uvicorn as `serve` runs them."""

from __future__ import annotations

import uvicorn

from imageblur.bootstrap import VideoParts
from imageblur.config import load_settings
from imageblur.entrypoints.api import create_app
from imageblur.logs import configure_logging
from video_copy import CopyProbe, CopyThrough, gate


def main() -> None:
    settings = load_settings()
    configure_logging(fmt=settings.log_format, level=settings.log_level)
    parts = VideoParts(probe=CopyProbe(), anonymizer=CopyThrough(gate()))
    app = create_app(settings, run_worker=True, video=parts)
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None)


if __name__ == "__main__":
    main()
