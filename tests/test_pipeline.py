"""What the pipeline returns, in pixels: backgrounds, sizes, smoothing, refinement, batching."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch
from PIL import Image

from server.pipeline.composite import blurred_background
from server.pipeline.config import SessionConfig
from server.pipeline.filters import gaussian_blur, torch_kernels
from server.pipeline.frames import DeviceFrame, Frame, StreamState
from server.pipeline.pipeline import Pipeline
from server.pipeline.refine import upsample_mask
from server.pipeline.smoothing import smooth_mask
from server.pipeline.yuv import Planes
from server.tools.client import photo_frames

from conftest import FACE, TOP_LEFT, TOP_RIGHT, region

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def frame(astronaut: np.ndarray) -> np.ndarray:
    return photo_frames(astronaut, count=1)[0]


def test_color_replaces_background_and_keeps_person(pipeline: Pipeline, frame: np.ndarray) -> None:
    out = pipeline.process_one(frame, StreamState(), SessionConfig(mode="color", color="#ff00ff")).pixels
    assert out.shape == frame.shape and out.dtype == np.uint8
    for corner in (TOP_LEFT, TOP_RIGHT):
        assert np.abs(region(out, corner) - [255, 0, 255]).mean() < 3
    assert np.abs(region(out, FACE) - region(frame, FACE)).mean() < 2


def test_none_is_passthrough(pipeline: Pipeline, frame: np.ndarray) -> None:
    out = pipeline.process_one(frame, StreamState(), SessionConfig(mode="none")).pixels
    assert np.array_equal(out, frame)
    video = Planes.of_rgb(frame).video_frame()  # a decoded frame goes back to the encoder untouched
    assert (
        pipeline.process_one(
            Planes.of_video_frame(video), StreamState(), SessionConfig(mode="none")
        ).planes.video_frame()
        is video
    )


@pytest.mark.parametrize("mode", ["color", "image"])
def test_planes_composite_as_rgb_would(
    pipeline: Pipeline, astronaut: np.ndarray, grace_hopper: np.ndarray, mode: str
) -> None:
    """Compositing the decoder's 4:2:0 planes gives what compositing its RGB did, as the viewer decodes it:
    within 2 grey levels on average, on real photos."""
    config = SessionConfig(mode=mode, color="#2080ff", image="bookshelf", light_wrap=0.0, smoothing=0.0)
    for photo in (astronaut, grace_hopper):
        sent = av.VideoFrame.from_ndarray(photo_frames(photo, count=1)[0], format="rgb24").reformat(format="yuv420p")
        planes = Planes.of_video_frame(sent)
        out = pipeline.process_one(planes, StreamState(), config).planes
        assert out.frame is not None and out.frame.format.name == "yuv420p" and out.size == (480, 640)
        seen = out.video_frame().to_ndarray(format="rgb24").astype(np.float64)
        # The same frame the old way: the decoder's frame as RGB, blended in RGB with the same mask.
        rgb = sent.to_ndarray(format="rgb24").astype(np.float64)
        mask = pipeline.masks([Frame(planes, StreamState(), config)])[0].mask.numpy()[..., None]
        if mode == "color":
            background = np.array([0x20, 0x80, 0xFF], np.float64)
        else:
            preset = pipeline.backgrounds.get("bookshelf")  # 1280x720 -> covers 640x480 as an 853x480 centre crop
            background = np.asarray(Image.fromarray(preset).resize((853, 480), Image.Resampling.BILINEAR))[:, 106:746]
        expected = np.round(background + mask * (rgb - background))
        assert np.abs(seen - expected).mean() <= 2.0
        assert np.abs(seen - expected)[mask[..., 0] > 0.99].mean() <= 2.0  # the person, too


@pytest.mark.parametrize("mode", ["color", "image", "blur", "mask"])
def test_torch_kernels_give_the_same_frames(pipeline: Pipeline, astronaut: np.ndarray, mode: str) -> None:
    """The whole pipeline on torch's kernels, the code CUDA runs, against OpenCV's on the CPU: the same frames
    but for the shrinking filter in front of the model (area average against antialiased bilinear)."""
    planes = Planes.of_video_frame(Planes.of_rgb(photo_frames(astronaut, count=1)[0]).video_frame())
    config = SessionConfig(mode=mode, smoothing=0.0)
    opencv = pipeline.process_one(planes, StreamState(), config).planes.rgb().astype(int)
    with torch_kernels():
        plain = pipeline.process_one(planes, StreamState(), config).planes.rgb().astype(int)
    assert np.abs(opencv - plain).mean() < 2.0


def test_mask_mode_shows_the_mask(pipeline: Pipeline, frame: np.ndarray) -> None:
    out = pipeline.process_one(frame, StreamState(), SessionConfig(mode="mask")).pixels
    assert region(out, FACE).mean() > 240 and region(out, TOP_RIGHT).mean() < 15
    assert np.abs(out[..., 0].astype(int) - out[..., 2]).max() <= 1  # grey


def test_image_background_is_cover_fitted(pipeline: Pipeline, frame: np.ndarray) -> None:
    out = pipeline.process_one(frame, StreamState(), SessionConfig(mode="image", image="studio")).pixels
    preset = pipeline.backgrounds.get("studio")  # 1280x720 -> covers 640x480 as an 853x480 centre crop
    expected = np.asarray(Image.fromarray(preset).resize((853, 480)))[:, 106:746]
    assert np.abs(region(out, TOP_RIGHT) - region(expected, TOP_RIGHT)).mean() < 4
    assert np.abs(region(out, FACE) - region(frame, FACE)).mean() < 2


def test_blur_has_no_halo(pipeline: Pipeline) -> None:
    # A dark person on a white wall: a plain blur would darken the wall around the person.
    frame = np.full((480, 640, 3), 255, np.uint8)
    state, config = StreamState(), SessionConfig(mode="blur", blur=1.0, refine=False, smoothing=0.0)
    mask = torch.zeros(1, 1, 480, 640)
    mask[..., 120:, 220:420] = 1.0
    frame[120:, 220:420] = 20
    planes = DeviceFrame(Planes.of_video_frame(Planes.of_rgb(frame).video_frame()), torch.device("cpu"))
    y, uv = blurred_background(planes.y, planes.uv, mask, 1.0)
    assert y.shape == (1, 1, 480, 640) and uv.shape == (1, 2, 240, 320)
    ring = y[0, 0, 100:480, 190:215]  # just outside the person, where a halo would show
    assert ring.min().item() >= 16 + 0.97 * 219  # white is Y 235
    out = pipeline.process_one(frame, state, config).pixels
    assert out.shape == frame.shape


@pytest.mark.parametrize("box", [(100, 400, 200, 425), (-40, 300, 500, 760)])
def test_a_region_of_the_planes_is_that_region_of_the_picture(astronaut: np.ndarray, box: tuple) -> None:
    """What region tracking gives its model: the region of the picture the decoder's planes show, scaled
    to the model's input; black where it reaches beyond the frame."""
    import cv2

    frame = photo_frames(astronaut, count=1)[0]  # 480x640
    video = Planes.of_rgb(frame).video_frame()
    picture = DeviceFrame(Planes.of_video_frame(video), torch.device("cpu"))
    ours = picture.rgb_in(box, (256, 256))[0].permute(1, 2, 0).numpy().astype(int)
    top, bottom, left, right = box
    region = np.zeros((bottom - top, right - left, 3), np.uint8)
    rows, cols = slice(max(top, 0), min(bottom, 480)), slice(max(left, 0), min(right, 640))
    region[rows.start - top : rows.stop - top, cols.start - left : cols.stop - left] = video.to_ndarray(format="rgb24")[
        rows, cols
    ]
    expected = cv2.resize(region, (256, 256), interpolation=cv2.INTER_AREA).astype(int)
    assert np.abs(ours - expected).mean() < 3
    if top < 0:  # beyond the frame: black, as the decoder's black would be
        assert ours[:24].max() <= 2 and ours[:, -100:].max() <= 2


@pytest.mark.parametrize("size", [(120, 160), (257, 333), (1080, 1920)])
def test_any_size_comes_back_the_same_size(pipeline: Pipeline, astronaut: np.ndarray, size: tuple[int, int]) -> None:
    frame = photo_frames(astronaut, size=size, count=1)[0]
    video = Planes.of_video_frame(Planes.of_rgb(frame).video_frame())  # 4:2:0, chroma rounded up when odd
    for mode in ("blur", "color", "image", "mask"):
        out = pipeline.process_one(frame, StreamState(), SessionConfig(mode=mode)).pixels
        assert out.shape == frame.shape
        planes = pipeline.process_one(video, StreamState(), SessionConfig(mode=mode)).planes
        assert planes.size == size and planes.u.shape == video.u.shape
        sent = planes.video_frame()
        assert (sent.height, sent.width, sent.format.name) == (*size, "yuv420p")


def test_smoothing_reduces_flicker_and_follows_motion() -> None:
    rng = np.random.default_rng(0)
    truth = torch.zeros(1, 1, 64, 64)
    truth[..., 16:48, 16:48] = 1.0
    noisy = [
        (truth * 0.6 + 0.2 + torch.from_numpy(rng.normal(0, 0.08, (1, 1, 64, 64))).float()).clamp(0, 1)
        for _ in range(20)
    ]

    def run(strength: float) -> float:
        previous, total = None, 0.0
        for mask in noisy:
            current = smooth_mask(previous, mask, strength)
            if previous is not None:
                total += (current - previous).abs().mean().item()
            previous = current
        return total

    assert run(0.8) < 0.6 * run(0.0)
    # A confident change (the person moved) is followed at once.
    moved = torch.roll(truth, 10, dims=3)
    followed = smooth_mask(truth, moved, 1.0)
    assert ((followed >= 0.5) == (moved >= 0.5)).float().mean() > 0.99


def test_smoothing_holds_flicker_where_the_flow_checks_out() -> None:
    """A confident change of a pixel whose motion the flow explains is more likely the model flickering:
    it is damped more than the same change where the flow failed its check (an occlusion, a new limb)."""
    previous = torch.full((1, 1, 8, 8), 0.6)
    current = torch.full((1, 1, 8, 8), 0.02)
    tracked = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    tracked[..., :4] = True
    change = (previous - smooth_mask(previous, current, 0.9, tracked)).abs()
    assert change[..., :4].max() < 0.75 * change[..., 4:].min()
    # Nothing known about the flow: every pixel as an untracked one.
    torch.testing.assert_close(
        smooth_mask(previous, current, 0.9), smooth_mask(previous, current, 0.9, tracked & False)
    )


def test_the_flow_check_passes_what_moved_and_fails_what_appeared(astronaut: np.ndarray) -> None:
    """The previous frame moved along the flow reproduces the next one where the motion is explained, not
    where something new appeared in front (an occlusion): there smoothing must follow the new mask."""
    from server.pipeline.motion import flow, grey, positions, reproduces

    before = grey(Planes.of_rgb(astronaut).y, (256, 256))
    now = np.ascontiguousarray(np.roll(before, (3, 5), axis=(0, 1)))  # the camera moved 5 px right, 3 down
    now[100:160, 100:160] = 255 - now[100:160, 100:160]  # and something new covers a square
    backward = flow(now, before)
    passed = reproduces(now, before, backward)
    assert np.array_equal(passed, reproduces(now, before, backward, where=positions(backward)))
    assert passed[10:90, 10:90].mean() > 0.9  # moved, and explained by the flow
    assert passed[110:150, 110:150].mean() < 0.1  # appeared: no flow from the previous frame explains it


def test_smoothing_restarts_on_resolution_change(pipeline: Pipeline, astronaut: np.ndarray) -> None:
    state, config = StreamState(), SessionConfig(mode="mask", smoothing=1.0)
    small = photo_frames(astronaut, size=(240, 320), count=1)[0]
    state = pipeline.process_one(small, state, config).state
    big = photo_frames(astronaut, size=(480, 640), count=1)[0]
    fresh = pipeline.process_one(big, StreamState(), config).pixels
    assert np.array_equal(pipeline.process_one(big, state, config).pixels, fresh)


def test_refinement_snaps_edges_to_the_frame() -> None:
    # A round person with a crisp edge in the frame; the model-sized mask only knows it blurrily.
    yy, xx = torch.meshgrid(torch.arange(480.0), torch.arange(640.0), indexing="ij")
    truth = (((yy - 300) ** 2 + (xx - 320) ** 2) < 170**2).float()
    luma = (0.2 + 0.6 * truth)[None, None] + 0.02 * torch.randn(1, 1, 480, 640)
    low = gaussian_blur(torch.nn.functional.interpolate(truth[None, None], size=(256, 256), mode="area"), 2.0)
    y = (16 + 219 * luma).round().clamp(0, 255).to(torch.uint8)
    plain = upsample_mask(low, y, refine=False)[0, 0]
    refined = upsample_mask(low, y, refine=True)[0, 0]
    wrong = lambda mask: ((mask >= 0.5) != (truth >= 0.5)).sum().item()  # noqa: E731
    assert wrong(plain) > 50
    assert wrong(refined) < wrong(plain) / 4
    # Across the true edge the refined mask jumps; the plain one ramps.
    edge_row = 300
    left_edge = int((truth[edge_row] > 0).nonzero()[0])
    assert refined[edge_row, left_edge + 1] - refined[edge_row, left_edge - 2] > 1.5 * (
        plain[edge_row, left_edge + 1] - plain[edge_row, left_edge - 2]
    )


def test_batch_of_sessions_equals_one_by_one(
    pipeline: Pipeline, astronaut: np.ndarray, grace_hopper: np.ndarray
) -> None:
    frames = [photo_frames(astronaut, count=1)[0], photo_frames(grace_hopper, size=(360, 480), count=1)[0]]
    configs = [SessionConfig(mode="color", color="#00ff00"), SessionConfig(mode="blur", model="landscape")]
    batched = [
        p.pixels for p in pipeline.process([Frame(f, StreamState(), c) for f, c in zip(frames, configs, strict=True)])
    ]
    for frame, config, out in zip(frames, configs, batched, strict=True):
        alone = pipeline.process_one(frame, StreamState(), config).pixels
        assert np.abs(alone.astype(int) - out.astype(int)).max() <= 1
    assert not np.array_equal(batched[0][:50, :50], frames[0][:50, :50])


def test_bad_frames_are_refused(pipeline: Pipeline) -> None:
    with pytest.raises(ValueError, match="uint8"):
        pipeline.process_one(np.zeros((10, 10), np.uint8), StreamState(), SessionConfig())


@pytest.mark.cuda
def test_cuda_fp16_pipeline_matches_cpu(pipeline: Pipeline, frame: np.ndarray) -> None:
    gpu = Pipeline(device="cuda", half=True)
    config = SessionConfig(mode="color", color="#0000ff")
    a = pipeline.process_one(frame, StreamState(), config).pixels.astype(int)
    b = gpu.process_one(frame, StreamState(), config).pixels.astype(int)
    assert np.abs(a - b).mean() < 2


@pytest.mark.parametrize("model", ["general", "fullbody", "auto"])
def test_region_tracking_finds_a_small_person(pipeline: Pipeline, grace_hopper: np.ndarray, model: str) -> None:
    # The truth: the model's own mask of the photo at full size, where it is reliable.
    photo = np.asarray(Image.fromarray(grace_hopper).resize((240, 300)))
    truth_small = pipeline.masks([Frame(photo, StreamState(), SessionConfig(smoothing=0.0, region=False))])[0].mask
    # The same person at a quarter of a larger frame's height, standing in front of a bookshelf.
    scene = np.asarray(Image.fromarray(pipeline.backgrounds.get("bookshelf")).resize((960, 720)))
    person = np.asarray(Image.fromarray(photo).resize((144, 180)))
    frame = scene.copy()
    frame[540:720, 600:744] = person
    truth = torch.zeros(720, 960, dtype=torch.bool)
    truth[540:720, 600:744] = torch.nn.functional.interpolate(truth_small[None, None], size=(180, 144))[0, 0] >= 0.5

    def iou_over(config: SessionConfig, frames: int = 30) -> float:
        state, result, regions = StreamState(), None, []
        for _ in range(frames):  # a still camera: the tracker settles on the person, and stays
            result = pipeline.masks([Frame(frame, state, config)])[0]
            state = result.state
            regions.append(state.region)
        assert result is not None and all(r == regions[-1] for r in regions[-5:]), regions[-5:]
        prediction = result.mask >= 0.5
        return ((prediction & truth).sum() / (prediction | truth).sum()).item()

    whole = iou_over(SessionConfig(smoothing=0.0, region=False))
    tracked = iou_over(SessionConfig(model=model, smoothing=0.0, region=True))
    assert tracked > whole + 0.1 and tracked > 0.7, (whole, tracked)


def test_smoothing_follows_a_moving_person(pipeline: Pipeline, grace_hopper: np.ndarray) -> None:
    """A person sliding across a still scene: smoothing along the optical flow trails less behind them than
    blending with where they were (warping error and IoU against where they are)."""
    from server.tools.evaluate import WarpingError

    person = np.asarray(Image.fromarray(grace_hopper).resize((160, 200)))
    alone = pipeline.masks([Frame(person, StreamState(), SessionConfig(smoothing=0.0, region=False))])[0].mask >= 0.5
    scene = np.asarray(Image.fromarray(pipeline.backgrounds.get("bookshelf")).resize((400, 240)))

    def frame_at(left: int) -> tuple[np.ndarray, torch.Tensor]:
        frame, truth = scene.copy(), torch.zeros(240, 400, dtype=torch.bool)
        frame[40:240, left : left + 160] = person
        truth[40:240, left : left + 160] = alone
        return frame, truth

    def run(motion: bool) -> tuple[float, float]:
        config = SessionConfig(smoothing=0.9, region=False, motion=motion)
        state, warping, ious = StreamState(), WarpingError(), []
        for left in range(0, 240, 16):  # 16 px a frame: a brisk walk at this size
            frame, truth = frame_at(left)
            result = pipeline.masks([Frame(frame, state, config)])[0]
            state = result.state
            warping.add(frame, result.mask)
            prediction = result.mask >= 0.5
            ious.append(((prediction & truth).sum() / (prediction | truth).sum()).item())
        return warping.value, float(np.mean(ious[1:]))

    (blended_error, blended_iou), (moved_error, moved_iou) = run(False), run(True)
    assert moved_error < 0.8 * blended_error, (blended_error, moved_error)
    assert moved_iou > blended_iou, (blended_iou, moved_iou)


def test_the_latency_counter_survives_the_pipeline(pipeline: Pipeline, astronaut: np.ndarray) -> None:
    """The loadtest's frame counter, drawn on the person, reads back from the processed frames in every mode."""
    from server.tools.client import photo_frames
    from server.tools.latency import read_stamp, stamp

    frames = photo_frames(astronaut, count=6)
    assert read_stamp(frames[0]) is None  # nothing drawn: nothing read
    for mode in ("color", "blur", "image"):
        state = StreamState()
        for i, frame in enumerate(frames):
            code = (37 * i + 200) % 256
            result = pipeline.process_one(stamp(frame, code), state, SessionConfig(mode=mode))
            state = result.state
            assert read_stamp(result.pixels) == code, mode


def test_opencv_and_torch_kernels_agree(astronaut: np.ndarray) -> None:
    """The CPU's OpenCV kernels and torch's (what CUDA runs) give the same filters, resizes and refined mask."""
    from server.pipeline.filters import (
        blend,
        boundary,
        box_blur,
        downscale,
        downscale_antialiased,
        gaussian_blur,
        max_filter,
        resize_bilinear,
    )

    rng = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 61, 83, generator=rng)
    for radius in (1, 2, 7):
        torch.testing.assert_close(box_blur(x, radius), box_blur(x, radius, opencv=False), atol=1e-5, rtol=0)
    torch.testing.assert_close(gaussian_blur(x, 4.0), gaussian_blur(x, 4.0, opencv=False), atol=1e-5, rtol=0)
    for radius in (1, 3):  # a maximum is exact, at the edges too
        assert torch.equal(max_filter(x - 1.0, radius), max_filter(x - 1.0, radius, opencv=False))
        person = x[:, :1] > 0.7
        band = boundary(person, radius)
        assert torch.equal(band, boundary(person, radius, opencv=False)) and 0 < band.float().mean() < 1
    for size in ((122, 166), (240, 320), (50, 70), (61, 83)):
        torch.testing.assert_close(resize_bilinear(x, size), resize_bilinear(x, size, opencv=False), atol=1e-5, rtol=0)
    planes = Planes.of_rgb(np.asarray(Image.fromarray(astronaut).resize((640, 480))))
    y = torch.from_numpy(planes.y)[None, None]
    uv = torch.from_numpy(np.stack([planes.u, planes.v]))[None]
    for size in ((240, 320), (256, 256), (500, 700)):  # uint8 planes, as the frames come
        torch.testing.assert_close(
            resize_bilinear(y, size).int(), resize_bilinear(y, size, False).int(), atol=1, rtol=0
        )
    # Refinement at its working height (nothing to shrink: that filter differs, below).
    mask, guide = torch.rand(1, 1, 256, 256, generator=rng), resize_bilinear(y, (270, 360))
    refined = upsample_mask(mask, guide, refine=True)
    torch.testing.assert_close(refined, upsample_mask(mask, guide, True, opencv=False), atol=1e-4, rtol=0)
    assert refined.shape == (1, 1, 270, 360)
    # Blending planes: OpenCV rounds as torch does.
    for background in (torch.tensor([40, 200], dtype=torch.uint8).view(1, 2, 1, 1), uv.flip(-1)):
        weight = torch.rand(1, 1, 480, 640, generator=rng)
        opencv, plain = (
            blend(background, uv, weight),
            blend(background, uv, weight, False),
        )
        assert (opencv.int() - plain.int()).abs().max() <= 1
    # Shrinking: OpenCV's area average and torch's antialiased bilinear, different filters for one purpose.
    for size in ((256, 256), (144, 256), (37, 50)):
        area, bilinear = downscale(y, size).float(), downscale(y, size, False).float()
        assert (area - bilinear).abs().mean() < 4, size
    # Region crops: antialiased bilinear on RGB both ways, torch's uint8 kernels against the float route.
    rgb = torch.from_numpy(np.asarray(Image.fromarray(astronaut).resize((360, 300)))).permute(2, 0, 1)[None]
    for picture in (rgb, rgb.contiguous(memory_format=torch.channels_last)):
        native, through_float = (
            downscale_antialiased(picture, (256, 256)),
            downscale_antialiased(picture, (256, 256), False),
        )
        assert (native.int() - through_float.int()).abs().max() <= 1
    # Warping along a flow (smoothing): OpenCV's remap interpolates at 1/32 px, grid_sample exactly.
    from server.pipeline.motion import flow, grey, positions, warp

    frames = [Planes.of_rgb(f).y for f in photo_frames(astronaut, size=(240, 320), count=8)]
    along = flow(grey(frames[-1], (240, 320)), grey(frames[0], (240, 320)))
    assert np.abs(along).max() > 2  # a real displacement, not the identity
    image = torch.rand(1, 2, 240, 320, generator=rng)
    torch.testing.assert_close(warp(image, along), warp(image, along, opencv=False), atol=1e-4, rtol=0)
    assert torch.equal(warp(image, along, where=positions(along)), warp(image, along))  # the map made once
