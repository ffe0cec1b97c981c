"""Frames as planes: conversions to and from RGB and video frames, at any size."""

from __future__ import annotations

import av
import cv2
import numpy as np
import pytest

from server.pipeline.yuv import Planes

pytestmark = pytest.mark.unit


def test_rgb_round_trip_is_close(astronaut: np.ndarray) -> None:
    planes = Planes.of_rgb(astronaut)
    assert not planes.subsampled and planes.size == astronaut.shape[:2]
    back = planes.rgb().astype(int)
    assert np.abs(back - astronaut).max() <= 2 and np.abs(back - astronaut).mean() < 0.5


def test_conversions_match_libswscale(astronaut: np.ndarray) -> None:
    """The planes a browser's or PyAV's yuv420p has, and the RGB a viewer decodes, are ours."""
    video = av.VideoFrame.from_ndarray(astronaut, format="rgb24").reformat(format="yuv420p")
    planes = Planes.of_video_frame(video)
    assert planes.subsampled and planes.u.shape == (256, 256)
    assert np.abs(planes.rgb().astype(int) - video.to_ndarray(format="rgb24")).mean() < 2
    ours = Planes.of_rgb(astronaut).video_frame()
    luma = np.abs(ours.to_ndarray(format="gray").astype(int) - video.to_ndarray(format="gray"))
    assert luma.max() <= 2 and luma.mean() < 0.2


@pytest.mark.parametrize("size", [(481, 641), (2, 2), (1, 5)])
def test_odd_sizes_survive_a_video_frame(astronaut: np.ndarray, size: tuple[int, int]) -> None:
    rgb = cv2.resize(astronaut, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    video = Planes.of_rgb(rgb).video_frame()
    assert (video.height, video.width) == size
    planes = Planes.of_video_frame(video)
    assert planes.u.shape == ((size[0] + 1) // 2, (size[1] + 1) // 2)
    assert planes.rgb().shape == rgb.shape


def test_bad_planes_are_refused() -> None:
    with pytest.raises(ValueError, match="uint8 RGB"):
        Planes.of_rgb(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="fit neither"):
        Planes(np.zeros((4, 4), np.uint8), np.zeros((3, 3), np.uint8), np.zeros((3, 3), np.uint8))
