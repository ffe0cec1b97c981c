"""Shared fixtures: real weights, real photos from dependencies, one pipeline per test run."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
from hypothesis import settings
from matplotlib import cbook

from models import fetch_weights
from server.pipeline.pipeline import Pipeline

# Fuzzing: a few hundred cases in the suite; `pytest --hypothesis-profile long tests/test_boundary.py` for 10,000+.
settings.register_profile("ci", max_examples=300, deadline=None, derandomize=False)
settings.register_profile("long", max_examples=12_000, deadline=None)
settings.load_profile("ci")

# Regions of the astronaut frames from `peer.photo_frames` (640x480, scaled x1.28): (top, bottom, left, right).
FACE = (110, 180, 230, 300)
TOP_LEFT = (0, 50, 0, 60)
TOP_RIGHT = (0, 50, 560, 640)


@pytest.fixture(scope="session", autouse=True)
def weights() -> None:
    """The pinned weights, fetched (and sha256-checked) once into the cache if they are not there yet."""
    fetch_weights()


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    return skimage.data.astronaut()


@pytest.fixture(scope="session")
def grace_hopper() -> np.ndarray:
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        from PIL import Image

        return np.asarray(Image.open(f).convert("RGB"))


@pytest.fixture(scope="session")
def pipeline() -> Pipeline:
    return Pipeline(device="cpu")


def region(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    top, bottom, left, right = box
    return image[top:bottom, left:right].reshape(-1, 3).astype(np.float64)
