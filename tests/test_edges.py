"""Clean edges: no fringe of the old background in the composite where the mask is soft, and the edge error
`evaluate` reports (the composite against the one the true mask gives, in a band around the true edge)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import nullcontext

import cv2
import numpy as np
import pytest
import torch

from server.pipeline.backgrounds import BackgroundState, BackgroundStore
from server.pipeline.composite import compose, person_weight
from server.pipeline.config import SessionConfig
from server.pipeline.filters import blend, downscale, torch_kernels
from server.pipeline.foreground import foreground, over
from server.pipeline.frames import DeviceFrame, download
from server.pipeline.refine import upsample_mask
from server.pipeline.yuv import Planes
from server.tools.evaluate import composite_errors, edge_band, edge_errors

pytestmark = pytest.mark.unit

SKIN = np.array([205, 150, 125], np.float64)  # the person
OLD = np.array([30, 60, 250], np.float64)  # a strongly coloured old background: blue
NEW = np.array([0, 177, 64], np.float64)  # the new one: colour mode's default green
BOX = (120, 360, 200, 440)  # the person's solid part: rows, then columns
RAMP = 14  # px of soft edge around it, alpha falling linearly from 1 to 0


@pytest.fixture(scope="module")
def backgrounds() -> BackgroundStore:
    return BackgroundStore()


@pytest.fixture(params=["opencv", "torch"])
def kernels(request: pytest.FixtureRequest) -> Iterator[None]:
    """Each test on the CPU's OpenCV kernels and on torch's (the code CUDA runs)."""
    with torch_kernels() if request.param == "torch" else nullcontext():
        yield


def soft_square() -> tuple[np.ndarray, np.ndarray]:
    """A skin-coloured square on the blue background with a soft edge: (H,W) alpha and the (H,W,3) frame
    a camera would see, alpha x skin + (1 - alpha) x blue."""
    top, bottom, left, right = BOX
    rows, cols = np.mgrid[0:480, 0:640].astype(np.float64)
    outside = np.maximum.reduce([top - rows, rows - (bottom - 1), left - cols, cols - (right - 1), np.zeros_like(rows)])
    alpha = np.clip(1.0 - outside / RAMP, 0.0, 1.0)
    frame = alpha[..., None] * SKIN + (1.0 - alpha[..., None]) * OLD
    return alpha.astype(np.float32), np.round(frame).astype(np.uint8)


def composited(frame: np.ndarray, alpha: np.ndarray, edges: bool, backgrounds: BackgroundStore, subsampled: bool):
    """The frame's planes (4:2:0 as a decoder gives them, or 4:4:4) composited over NEW in colour mode with
    `alpha` as the mask, as RGB."""
    planes = Planes.of_rgb(frame)
    if subsampled:
        planes = Planes.of_video_frame(planes.video_frame())
    picture = DeviceFrame(planes, torch.device("cpu"))
    config = SessionConfig(mode="color", color="#00b140", edges=edges)
    mask = torch.from_numpy(alpha)[None, None]
    (y, uv), _ = compose(picture.y, picture.uv, mask, BackgroundState(), config, backgrounds)
    return download(y, uv).rgb().astype(np.float64)


@pytest.mark.parametrize("subsampled", [False, True], ids=["444", "420"])
def test_the_edge_carries_no_old_background(kernels: None, backgrounds: BackgroundStore, subsampled: bool) -> None:
    """Over the soft edge the composite is the person's colour over the new background (alpha x skin +
    (1 - alpha) x green), not the frame's mix with the old blue; without the edge step the blue stays."""
    alpha, frame = soft_square()
    ramp = (alpha > 0.05) & (alpha < 0.95)
    ideal = alpha[..., None] * SKIN + (1.0 - alpha[..., None]) * NEW
    clean = composited(frame, alpha, True, backgrounds, subsampled)
    plain = composited(frame, alpha, False, backgrounds, subsampled)
    clean_error = np.abs(clean - ideal)[ramp].mean(axis=1)
    plain_error = np.abs(plain - ideal)[ramp].mean(axis=1)
    assert plain_error.mean() > 15  # the fringe the step removes is there to remove
    assert clean_error.mean() < 3 and np.percentile(clean_error, 99) < 8
    # The old background's colour in particular: blue above what skin over green has.
    assert (clean[..., 2] - ideal[..., 2])[ramp].mean() < 3 and (plain[..., 2] - ideal[..., 2])[ramp].mean() > 15
    # The solid person and the background are untouched by the step, 4 px from the ramp on (a 4:2:0 chroma
    # pixel on the ramp reaches a little past it once the viewer upsamples it).
    soft = ((alpha > 0.0) & (alpha < 1.0)).astype(np.uint8)
    untouched = ~cv2.dilate(soft, np.ones((9, 9), np.uint8)).astype(bool)
    assert np.array_equal(clean[untouched], plain[untouched])


def test_the_edge_step_keeps_the_frame_where_the_mask_is_one(kernels: None) -> None:
    """Where the mask is 1 the estimated foreground is the frame's pixel exactly (Y and UV), so a person's
    inside never changes, whatever the picture."""
    rng = np.random.default_rng(3)
    planes = Planes.of_video_frame(Planes.of_rgb(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)).video_frame())
    picture = DeviceFrame(planes, torch.device("cpu"))
    alpha, _ = soft_square()
    mask = torch.from_numpy(cv2.resize(alpha, (320, 240), interpolation=cv2.INTER_AREA))[None, None]
    fy, fuv = foreground(picture.y, picture.uv, mask)
    assert fy.shape == picture.y.shape and fuv.shape == picture.uv.shape and fy.dtype == torch.uint8
    inside = mask >= 1.0
    assert torch.equal(fy[inside], picture.y[inside])
    chroma_inside = downscale(mask, (120, 160))[0, 0] >= 1.0  # the chroma's mask, as compositing makes it
    assert chroma_inside.sum() > 3000
    assert torch.equal(fuv[0][:, chroma_inside], picture.uv[0][:, chroma_inside])


@pytest.mark.parametrize("mode", ["color", "image"])
@pytest.mark.parametrize("wrap", [0.0, 0.7])
def test_the_cpu_blends_the_estimate_only_where_it_shows_and_gives_torchs_frame(
    backgrounds: BackgroundStore, mode: str, wrap: float
) -> None:
    """On the CPU `over` blends the estimated colour only where the mask is soft, which must give the frame
    that blending it everywhere does (torch's kernels, the code CUDA runs), with the same masks and weights:
    a textured person with a soft edge, over a colour and over an image, with light wrap too."""
    alpha, frame = soft_square()
    rng = np.random.default_rng(5)
    textured = np.clip(frame.astype(int) + rng.integers(-40, 41, frame.shape), 0, 255).astype(np.uint8)
    picture = DeviceFrame(Planes.of_video_frame(Planes.of_rgb(textured).video_frame()), torch.device("cpu"))
    y, uv = picture.y, picture.uv
    mask = torch.from_numpy(alpha)[None, None]
    chroma_mask = downscale(mask, (uv.shape[-2], uv.shape[-1]))
    weights = (person_weight(mask, wrap), person_weight(chroma_mask, wrap))
    if mode == "color":
        background = (
            torch.tensor([120], dtype=torch.uint8).view(1, 1, 1, 1),
            torch.tensor([60, 90]).to(torch.uint8).view(1, 2, 1, 1),
        )
    else:
        picture_yuv = Planes.of_rgb(cv2.resize(backgrounds.get("bookshelf"), (640, 480)))
        fitted = DeviceFrame(Planes.of_video_frame(picture_yuv.video_frame()), torch.device("cpu"))
        background = (fitted.y, fitted.uv)
    band_y, band_uv = over(background, y, uv, mask, weights, chroma_mask)
    with torch_kernels():
        all_y, all_uv = over(background, y, uv, mask, weights, chroma_mask)
        plain_y = blend(background[0], y, weights[0])
    ramp = torch.from_numpy((alpha > 0.05) & (alpha < 0.95))
    assert (plain_y.int() - all_y.int()).abs()[0, 0][ramp].float().mean() > 5  # the estimate changes the edge
    assert (band_y.int() - all_y.int()).abs().max() <= 1 and (band_uv.int() - all_uv.int()).abs().max() <= 1


def test_light_wrap_still_works_with_clean_edges(backgrounds: BackgroundStore) -> None:
    """Light wrap spills the new background onto the person's edge, over the estimated colour."""
    alpha, frame = soft_square()
    picture = DeviceFrame(Planes.of_rgb(frame), torch.device("cpu"))
    mask = torch.from_numpy(alpha)[None, None]
    out = {}
    for wrap in (0.0, 1.0):
        config = SessionConfig(mode="color", color="#00b140", light_wrap=wrap)
        (y, uv), _ = compose(picture.y, picture.uv, mask, BackgroundState(), config, backgrounds)
        out[wrap] = download(y, uv).rgb().astype(np.float64)
    inner_edge = (alpha >= 1.0) & (cv2.blur(alpha, (9, 9)) < 0.99)  # the person, just inside the edge
    greener = out[1.0][..., 1] - out[0.0][..., 1]
    assert greener[inner_edge].mean() > 5
    assert np.array_equal(out[1.0][200:280, 280:360], out[0.0][200:280, 280:360])  # the middle, untouched


def test_refinement_tightens_the_edge() -> None:
    """The refined mask's ramp is a few pixels wide, not the upsampled model's ~20 (on a flat frame, where
    the guided filter has no edge to snap to), and its 0.5 level moves in from the soft mask's 0.6 level."""
    low = torch.zeros(1, 1, 64, 64)
    low[..., 16:48, 16:48] = 1.0
    low = torch.from_numpy(cv2.GaussianBlur(low[0, 0].numpy(), (0, 0), 1.5))[None, None]
    y = torch.full((1, 1, 480, 480), 128, dtype=torch.uint8)
    plain = upsample_mask(low, y, refine=False)[0, 0, 240]
    refined = upsample_mask(low, y, refine=True)[0, 0, 240]
    soft = lambda row: int(((row > 0.02) & (row < 0.98)).sum())  # noqa: E731
    assert soft(plain) >= 30 and 2 <= soft(refined) <= soft(plain) // 3
    inside = lambda row, level: int((row >= level).sum())  # noqa: E731
    assert abs(inside(refined, 0.5) - inside(plain, 0.6)) <= 4 and inside(refined, 0.5) < inside(plain, 0.5)


def test_the_band_is_the_pixels_near_the_true_edge() -> None:
    truth = np.zeros((100, 100), bool)
    truth[30:70, 30:70] = True
    outer, inner = edge_band(truth, 3)
    assert not (outer & truth).any() and (inner <= truth).all()
    assert outer[27, 50] and not outer[26, 50] and inner[32, 50] and not inner[33, 50]
    assert inner.sum() == 40 * 40 - 34 * 34
    empty = edge_band(np.zeros((10, 10), bool), 3)
    assert not empty[0].any() and not empty[1].any()  # no person: no edge
    seen = np.zeros((10, 10, 3), np.uint8)
    assert all(np.isnan(v) for v in edge_errors(seen, seen, np.zeros((10, 10), bool), 3))


def test_the_edge_error_is_zero_for_the_true_mask_and_grows_outside_for_a_dilated_one(
    backgrounds: BackgroundStore,
) -> None:
    """On a made-up photo: the true mask scores 0; a mask 4 px too large puts the old background in the
    band's outer half (the inner half stays right); one 4 px too small, the new colour in the inner half."""
    rng = np.random.default_rng(5)
    image = np.clip(rng.normal(170, 40, (240, 320, 3)), 0, 255).astype(np.uint8)  # a textured wall
    truth = np.zeros((240, 320), bool)
    cv2.ellipse(truth.view(np.uint8), (160, 150), (70, 90), 0, 0, 360, 1, -1)
    image[truth] = (90, 60, 40)  # a brown person
    config = SessionConfig(mode="color", color="#ff00ff")
    kernel = np.ones((9, 9), np.uint8)

    def errors(mask: np.ndarray) -> tuple[float, float, float]:
        probability = torch.from_numpy(mask.astype(np.float32))
        return composite_errors(image, probability, truth, config, backgrounds, 6)

    assert errors(truth) == (0.0, 0.0, 0.0)
    overall, outer, inner = errors(cv2.dilate(truth.view(np.uint8), kernel).astype(bool))
    assert outer > 50 and inner == 0.0 and 0 < overall < outer
    overall, outer, inner = errors(cv2.erode(truth.view(np.uint8), kernel).astype(bool))
    assert inner > 50 and outer == 0.0
