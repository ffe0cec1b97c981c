"""Glass-to-glass latency: a frame counter drawn into the frames a client sends, read back from the frames
it receives.

The counter is a row of bits on the person (the pipeline keeps the person's pixels in every mode): each
bit is a pair of blocks, bright-dark for 1 and dark-bright for 0, so that a bit is read by comparing its
two halves and survives the codec's blur and the compositor's colour changes. Eight bits wrap every 256
frames (8.5 s at 30 fps), far longer than any latency worth measuring.
"""

from __future__ import annotations

import time

import numpy as np

BITS = 8
# Where the code sits, as fractions of the frame (top, bottom, left, right): on the chest of a person
# framed head-and-shoulders, like the loadtest's photo.
PLACE = (0.74, 0.80, 0.36, 0.64)
BRIGHT, DARK = 235, 20
MIN_CONTRAST = 40  # grey levels between a bit's halves below which the code is unreadable


def _cells(shape: tuple[int, ...]) -> list[tuple[slice, slice, slice]]:
    """(rows, left half, right half) of each bit, most significant first."""
    height, width = shape[:2]
    top, bottom = round(PLACE[0] * height), round(PLACE[1] * height)
    left, right = round(PLACE[2] * width), round(PLACE[3] * width)
    step = (right - left) // BITS
    rows = slice(top, bottom)
    # A margin of a quarter half-block inside each half: reads ignore the edges the codec smears.
    inset = max(step // 8, 1)
    return [
        (rows, slice(left + i * step + inset, left + i * step + step // 2 - inset),
         slice(left + i * step + step // 2 + inset, left + (i + 1) * step - inset))
        for i in range(BITS)
    ]  # fmt: skip


def stamp(pixels: np.ndarray, counter: int) -> np.ndarray:
    """A copy of (H,W,3) uint8 `pixels` with `counter` (mod 2**BITS) drawn in."""
    out = pixels.copy()
    height, width = pixels.shape[:2]
    top, bottom = round(PLACE[0] * height), round(PLACE[1] * height)
    left = round(PLACE[2] * width)
    step = (round(PLACE[3] * width) - left) // BITS
    for i in range(BITS):
        bit = (counter >> (BITS - 1 - i)) & 1
        x = left + i * step
        out[top:bottom, x : x + step // 2] = BRIGHT if bit else DARK
        out[top:bottom, x + step // 2 : x + step] = DARK if bit else BRIGHT
    return out


def read_stamp(pixels: np.ndarray) -> int | None:
    """The counter drawn by `stamp` into (H,W,3) uint8 `pixels` or their (H,W) luma (after a codec and the
    pipeline), or None where it cannot be read (a bit's halves too alike)."""
    grey = pixels.astype(np.float32)
    grey = grey.mean(axis=-1) if grey.ndim == 3 else grey
    value = 0
    for rows, first, second in _cells(pixels.shape):
        a, b = float(grey[rows, first].mean()), float(grey[rows, second].mean())
        if abs(a - b) < MIN_CONTRAST:
            return None
        value = (value << 1) | int(a > b)
    return value


class LatencyProbe:
    """Stamps each sent frame with a counter, remembers when, and measures the delay of each returned one."""

    def __init__(self) -> None:
        self._sent: dict[int, float] = {}
        self._counter = 0
        self.samples_ms: list[float] = []
        self.unreadable = 0

    def sent(self, pixels: np.ndarray) -> np.ndarray:
        """`pixels` stamped with the next counter, its sending time recorded (call as the frame leaves)."""
        code = self._counter % (1 << BITS)
        self._counter += 1
        self._sent[code] = time.monotonic()
        return stamp(pixels, code)

    def received(self, pixels: np.ndarray) -> float | None:
        """The delay in ms of a returned frame (recorded), or None if its code is unreadable or unknown."""
        now = time.monotonic()
        code = read_stamp(pixels)
        sent = None if code is None else self._sent.get(code)
        if sent is None or now - sent > 5.0:  # a wrapped counter would read as a huge delay
            self.unreadable += 1
            return None
        self.samples_ms.append((now - sent) * 1000.0)
        return self.samples_ms[-1]
