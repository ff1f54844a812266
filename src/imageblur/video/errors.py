"""The ways a video is refused or fails.

`InvalidVideo` is a refusal before any work (the probe): nothing is stored, and the API
answers its `http_status` with its `code`. `BrokenVideo` is found while decoding (a
corrupt or truncated stream, more frames or a longer stream than the header announced):
the job ends `failed` with its reason and leaves no partial output.
"""

from __future__ import annotations

from imageblur.domain import ImageblurError, ProcessingError


class InvalidVideo(ImageblurError):  # noqa: N818 - a domain name, not a "...Error" suffix
    """The upload is not a video we accept. `http_status` and `code` say which 4xx."""

    def __init__(self, message: str, *, http_status: int = 400, code: str = "invalid_video"):
        super().__init__(message)
        self.message = message
        self.http_status = http_status
        self.code = code


# BrokenVideo's codes for the sound: an input's audio packet that does not decode, and
# a failure to encode or mux the sound into the result (the job's `audio_failed`).
CORRUPT_AUDIO = "corrupt_audio"
AUDIO_FAILED = "audio_failed"
# The video's frames not encoded or not written into the result (the encoder or the
# muxer refused, the disk would not take them): the job's `encode_failed`, not the input.
ENCODE_FAILED = "encode_failed"


class BrokenVideo(ProcessingError):  # noqa: N818
    """Decoding found what the header did not say: corrupt or truncated data, more
    frames or a longer stream than announced; or the sound (`AUDIO_FAILED`) or the
    frames (`ENCODE_FAILED`) could not be written to the result. Retrying will not fix
    it."""

    def __init__(self, message: str, *, code: str = "corrupt_video"):
        super().__init__(message)
        self.message = message
        self.code = code
