"""A stored object read as a seekable file, through the store's ranged reads: what a
reader that jumps about needs (FFmpeg's demuxer, looking for an MP4's `moov` atom at
the end of the file), holding a few blocks, never the object. Through the encryption
envelope (version 2) a ranged read opens only the segments it spans, so a block of a
segment's size costs one segment's decryption."""

from __future__ import annotations

import io
import os
from collections import OrderedDict
from typing import BinaryIO

from imageblur.ports import ObjectStore

# One ranged read: the envelope's segment size (1 MiB), and few enough round trips to S3
# for a container header (FFmpeg reads in 32 KiB steps).
BLOCK_BYTES = 1 << 20
# Blocks kept: a demuxer goes back and forth between the start and the end of a file.
BLOCKS_KEPT = 4


class RangedReader(io.RawIOBase):
    """The object under `key` as a read-only, seekable binary file. Reads raise what the
    store raises (`ObjectMissing`, `StoreUnavailable`); memory is at most `blocks_kept`
    blocks of `block_bytes`."""

    def __init__(
        self,
        store: ObjectStore,
        key: str,
        *,
        block_bytes: int = BLOCK_BYTES,
        blocks_kept: int = BLOCKS_KEPT,
    ) -> None:
        super().__init__()
        self._store, self._key = store, key
        self._block_bytes, self._blocks_kept = block_bytes, blocks_kept
        first = store.get_range(key, 0, block_bytes)  # the object's size comes with it
        self._size = first.size
        self._blocks: OrderedDict[int, bytes] = OrderedDict({0: first.data})
        self._position = 0
        self.ranges_read = 1  # ranged reads made (for tests and logs)

    @property
    def size(self) -> int:
        return self._size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._position, os.SEEK_END: self._size}
        if whence not in base:
            raise ValueError(f"invalid whence {whence}")
        position = base[whence] + offset
        if position < 0:
            raise ValueError(f"negative seek position {position}")
        self._position = position
        return position

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        """Fills `buffer` (fewer bytes only at the object's end), across blocks."""
        filled = 0
        while filled < len(buffer) and self._position < self._size:
            index, start = divmod(self._position, self._block_bytes)
            block = self._block(index)
            count = min(len(buffer) - filled, len(block) - start)
            if count <= 0:
                break  # the object shrank under us: its end
            buffer[filled : filled + count] = block[start : start + count]
            filled += count
            self._position += count
        return filled

    def _block(self, index: int) -> bytes:
        block = self._blocks.get(index)
        if block is not None:
            self._blocks.move_to_end(index)
            return block
        start = index * self._block_bytes
        block = self._store.get_range(self._key, start, start + self._block_bytes).data
        self.ranges_read += 1
        self._blocks[index] = block
        while len(self._blocks) > self._blocks_kept:
            self._blocks.popitem(last=False)
        return block


def open_ranged(store: ObjectStore, key: str) -> BinaryIO:
    """The object under `key` as a buffered, seekable binary file over `RangedReader`
    (close it)."""
    return io.BufferedReader(RangedReader(store, key), buffer_size=64 * 1024)
