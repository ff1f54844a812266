"""The detector each preset an upload asks for looks with (`detection.presets`): the
server's own for presets that look as its preset does, another loaded once, on first
use, however many job threads ask for it at once."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from imageblur.detection.presets import PresetDetectors
from imageblur.domain import Face
from imageblur.ports import RGBImage

LOOKS = {"privacy": "once", "tidy": "once", "thorough": "mirrored"}


class Named:
    def __init__(self, name: str) -> None:
        self.name = name

    def detect(self, image: RGBImage) -> list[Face]:
        return []


class Loads:
    """A loader that counts its loads, each held until `release` is set."""

    def __init__(self) -> None:
        self.count = 0
        self.release = threading.Event()

    def __call__(self, preset: str) -> Named:
        self.count += 1
        assert self.release.wait(10), "the test never let the load finish"
        return Named(preset)


def test_presets_that_look_alike_share_the_servers_detector() -> None:
    main, load = Named("main"), Loads()
    detectors = PresetDetectors(main, server_preset="privacy", looks=LOOKS.get, load=load)
    assert detectors("privacy") is main and detectors("tidy") is main
    assert (load.count, detectors.loaded) == (0, 1)


def test_another_looks_detector_is_loaded_once_for_threads_asking_at_once() -> None:
    main, load = Named("main"), Loads()
    detectors = PresetDetectors(main, server_preset="privacy", looks=LOOKS.get, load=load)
    with ThreadPoolExecutor(5) as pool:  # a thread left for the tidy job
        asked = [pool.submit(detectors, "thorough") for _ in range(4)]
        # While it loads, a job of the server's preset does not wait for it.
        assert pool.submit(detectors, "tidy").result(timeout=10) is main
        load.release.set()
        found = {id(future.result(timeout=10)) for future in asked}
    assert len(found) == 1 and load.count == 1
    assert detectors("thorough") is asked[0].result() and detectors.loaded == 2
