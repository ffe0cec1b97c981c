"""Motion between consecutive frames at mask resolution: dense optical flow and warping along it.

Flow is OpenCV's DIS (ultrafast preset) on small grey images, on the CPU for every device: at mask
resolution (320 px or less) it costs about a millisecond, less than moving the images to and from a GPU
would save. Warping is `grid_sample`, on the mask's own device.
"""

from __future__ import annotations

import threading
from functools import lru_cache

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .filters import opencv_on

_local = threading.local()  # a DIS object keeps buffers between calls: one per thread


def _dis() -> cv2.DISOpticalFlow:
    dis = getattr(_local, "dis", None)
    if dis is None:
        dis = _local.dis = cv2.DISOpticalFlow.create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
    return dis


def grey(luma: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A frame's (H,W) uint8 Y plane shrunk to `size` (h, w), as the flow wants it: contiguous."""
    return cv2.resize(luma, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def flow(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(h,w,2) float32 flow from grey image `source` to `target`: pixel (x, y) of `source` is seen at
    (x + u, y + v) in `target`."""
    return np.asarray(_dis().calc(source, target, None))  # type: ignore[call-overload]  # stubs miss None


def positions(towards: np.ndarray) -> np.ndarray:
    """(h,w,2) float32: each pixel's x, y plus the flow `towards`, where `warp` and `reproduces` read from
    (made once per flow and passed to both, rather than added to the grid by each)."""
    return _pixels(*towards.shape[:2]) + towards


def warp(
    image: torch.Tensor, towards: np.ndarray, opencv: bool | None = None, where: np.ndarray | None = None
) -> torch.Tensor:
    """A (1,C,h,w) image resampled at each pixel's position plus `towards` (h,w,2) (bilinear, edges
    repeated): with the flow from frame t to frame t-1, frame t-1's image moved to where things are at t.
    float32 on the CPU: OpenCV's remap (a third of grid_sample's time), at `where` (`positions(towards)`) if
    given; elsewhere, or with `opencv=False`, grid_sample on the image's device."""
    h, w = image.shape[-2:]
    if opencv_on(image, opencv) and image.dtype == torch.float32:
        where = positions(towards) if where is None else where
        planes = [_remap(plane.numpy(), where, border=cv2.BORDER_REPLICATE) for plane in image.contiguous()[0]]
        return torch.from_numpy(np.stack(planes))[None]
    offsets = torch.from_numpy(towards).to(image.device, torch.float32)
    ys_t, xs_t = torch.meshgrid(
        torch.arange(h, device=image.device, dtype=torch.float32),
        torch.arange(w, device=image.device, dtype=torch.float32),
        indexing="ij",
    )
    # grid_sample's coordinates: -1 and 1 are the centres of the edge pixels (align_corners=True).
    gx = (xs_t + offsets[..., 0]) * (2.0 / max(w - 1, 1)) - 1.0
    gy = (ys_t + offsets[..., 1]) * (2.0 / max(h - 1, 1)) - 1.0
    grid = torch.stack((gx, gy), dim=-1)[None].to(image.dtype)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)


def _remap(image: np.ndarray, where: np.ndarray, border: int = cv2.BORDER_CONSTANT) -> np.ndarray:
    """`image` sampled bilinearly at `where` (h,w,2) x, y."""
    return cv2.remap(image, where, None, cv2.INTER_LINEAR, borderMode=border)  # type: ignore[call-overload]  # stubs miss None


@lru_cache(maxsize=16)
def _pixels(h: int, w: int) -> np.ndarray:
    """(h,w,2) float32 x, y of each pixel: a flow added to it is the map cv2.remap reads (one array for
    both coordinates, which remap takes as it is)."""
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    grid = np.stack([xs, ys], axis=-1)
    grid.flags.writeable = False  # shared by every caller
    return grid


def consistent(backward: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """(h,w) bool: pixels of frame t whose flow to t-1 (`backward`) the flow from t-1 to t (`forward`)
    brings back, the test for occlusions and flow errors of Sundaram et al. (ECCV 2010)."""
    returned = _remap(forward, positions(backward))

    # Squared lengths by cv2.magnitude: numpy's sums over a 2-long last axis took 5x longer (7 ms at 320x240).
    def squared_length(v: np.ndarray) -> np.ndarray:
        return cv2.magnitude(v[..., 0], v[..., 1]) ** 2

    loop = squared_length(backward + returned)
    return loop < 0.01 * (squared_length(backward) + squared_length(returned)) + 0.5


def reproduces(
    image: np.ndarray,
    previous: np.ndarray,
    backward: np.ndarray,
    tolerance: float = 12.0,
    where: np.ndarray | None = None,
) -> np.ndarray:
    """(h,w) bool: pixels of grey `image` that grey `previous`, moved along `backward` (the flow from `image`
    to `previous`), reproduces within `tolerance` grey levels, averaged over 3x3 (brightness constancy: a flow
    through an occlusion or a wrong match lands on other pixels). One remap in place of a second flow and the
    forward-backward check (`consistent`, which `evaluate` keeps): 0.5 ms against 2.5 at 256x256. `where`:
    `positions(backward)`, if made already."""
    moved = _remap(previous, positions(backward) if where is None else where, border=cv2.BORDER_REPLICATE)
    difference = cv2.blur(cv2.absdiff(moved, image), (3, 3))
    return difference <= tolerance
