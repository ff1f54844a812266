"""The detector each detection preset looks with, for an upload's `preset` option.

Presets that differ only in thresholds share a detector (the thresholds are set per
call). A preset that looks otherwise (`thorough`: the mirrored passes, the enlarged
pass, the float model) needs its own, which costs memory (docs/detection.md, "A preset
per upload"): it is loaded on the first job that asks for it, then kept and shared by
the job threads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable

from imageblur.ports import FaceDetector


class PresetDetectors:
    """`looks(preset)`: what sets a preset's detector apart (the server's own preset's
    value says which presets `main` serves); `load(preset)`: a new detector for it."""

    def __init__(
        self,
        main: FaceDetector,
        *,
        server_preset: str,
        looks: Callable[[str], Hashable],
        load: Callable[[str], FaceDetector],
    ) -> None:
        self._looks = looks
        self._load = load
        self._loaded: dict[Hashable, FaceDetector] = {looks(server_preset): main}
        # Held while a detector loads: two jobs asking for the same preset at once load
        # it once (the second waits) rather than hold two copies of its model.
        self._lock = threading.Lock()

    def __call__(self, preset: str) -> FaceDetector:
        """The detector of `preset`, loaded now if no preset that looks the same was."""
        key = self._looks(preset)
        found = self._loaded.get(key)  # without the lock: others wait for no load
        if found is not None:
            return found
        with self._lock:
            found = self._loaded.get(key)
            if found is None:
                found = self._loaded[key] = self._load(preset)
            return found

    @property
    def loaded(self) -> int:
        """How many detectors are loaded (the one at start included)."""
        return len(self._loaded)
