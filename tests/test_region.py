"""The region tracker's rules, through its public functions: where the crop goes around a person, how it follows
them from frame to frame, and how a crop's mask goes back onto the frame."""

from __future__ import annotations

import pytest
import torch

from server.pipeline.region import Region, canvas_size, follow, paste, person_box, region_around, touches_edge

pytestmark = pytest.mark.unit

FRAME = (480, 640)  # height, width


def _mask(size: tuple[int, int], rows: slice, cols: slice, value: float = 1.0) -> torch.Tensor:
    mask = torch.zeros(1, 1, *size)
    mask[..., rows, cols] = value
    return mask


# --- person_box ---------------------------------------------------------------------------------------


def test_person_box_is_the_fraction_of_the_mask_the_person_spans() -> None:
    mask = _mask((100, 200), slice(10, 30), slice(50, 150))
    assert person_box(mask) == (0.1, 0.3, 0.25, 0.75)
    # A single pixel in a corner: its own row and column, bottom and right exclusive.
    assert person_box(_mask((100, 200), slice(99, 100), slice(199, 200))) == (0.99, 1.0, 0.995, 1.0)


def test_person_box_ignores_what_is_below_the_threshold() -> None:
    mask = _mask((100, 100), slice(20, 40), slice(20, 40), 0.9)
    mask[..., 60:80, 60:80] = 0.49  # doubtful: not the person
    assert person_box(mask) == (0.2, 0.4, 0.2, 0.4)
    assert person_box(mask, threshold=0.4) == (0.2, 0.8, 0.2, 0.8)
    assert person_box(_mask((100, 100), slice(20, 40), slice(20, 40), 0.5)) == (0.2, 0.4, 0.2, 0.4)  # at it counts


def test_no_person_is_no_box() -> None:
    assert person_box(torch.zeros(1, 1, 48, 64)) is None
    assert person_box(torch.full((1, 1, 48, 64), 0.3)) is None


# --- region_around --------------------------------------------------------------------------------------


def _inside(inner: tuple[float, float, float, float], outer: tuple[int, int, int, int]) -> bool:
    return outer[0] <= inner[0] and inner[1] <= outer[1] and outer[2] <= inner[2] and inner[3] <= outer[3]


def test_the_region_is_centred_on_the_person_with_a_margin_all_round() -> None:
    box = (0.4, 0.6, 0.45, 0.55)  # 96 x 64 px of a 480x640 frame, centred at (320, 240)
    region = region_around(box, FRAME, aspect=1.0)
    assert region is not None
    assert (region.cx, region.cy) == (320.0, 240.0)
    top, bottom, left, right = region.box()
    person = (0.4 * 480, 0.6 * 480, 0.45 * 640, 0.55 * 640)
    assert _inside(person, (top, bottom, left, right))
    # A margin on every side, not a crop flush with the person.
    assert top < person[0] - 10 and bottom > person[1] + 10 and left < person[2] - 10 and right > person[3] + 10
    assert bottom - top == right - left  # the model's aspect: square here


@pytest.mark.parametrize("aspect", [1.0, 16 / 9, 0.75])
def test_the_region_has_the_models_aspect_and_holds_a_wide_person(aspect: float) -> None:
    box = (0.45, 0.55, 0.3, 0.6)  # lying down: 48 px high, 192 px wide
    region = region_around(box, FRAME, aspect)
    assert region is not None and region.width / region.height == pytest.approx(aspect)
    top, bottom, left, right = region.box()
    assert (right - left) / (bottom - top) == pytest.approx(aspect, rel=0.02)
    assert _inside((0.45 * 480, 0.55 * 480, 0.3 * 640, 0.6 * 640), (top, bottom, left, right))


def test_a_tiny_person_gets_a_region_of_some_pixels_still() -> None:
    region = region_around((0.5, 0.501, 0.5, 0.5005), FRAME, aspect=1.0)
    assert region is not None and region.height >= 16
    top, bottom, left, right = region.box()
    assert bottom - top >= 16 and right - left >= 16


def test_a_region_showing_most_of_the_frame_is_the_whole_frame() -> None:
    # A selfie: the person spans most of the frame's height. The selfie models want the whole frame then.
    tall = (0.1, 0.85, 0.45, 0.55)
    assert region_around(tall, FRAME, aspect=1.0) is None
    assert region_around((0.0, 1.0, 0.0, 1.0), FRAME, aspect=1.0) is None
    # The pose segmenter wants its square around a tall, narrow person (the whole frame would be squeezed).
    square = region_around(tall, FRAME, aspect=1.0, square=True)
    assert square is not None and square.box()[3] - square.box()[2] < 0.8 * 640
    # ... but not when the region would show most of the frame both ways.
    assert region_around((0.05, 0.95, 0.05, 0.95), FRAME, aspect=1.0, square=True) is None


def test_a_detectors_box_beyond_the_frame_still_gives_a_region() -> None:
    region = region_around((-0.1, 0.3, 0.8, 1.05), FRAME, aspect=1.0)
    assert region is not None
    top, _, _, right = region.box()
    assert top < 0 and right > 640  # it may reach outside; paste and the crop handle that


# --- follow ---------------------------------------------------------------------------------------------


def test_the_track_ends_when_the_person_is_lost() -> None:
    assert follow(Region(320, 240, 200, 1.0), None, touches_edge=False) is None


def test_small_moves_are_ignored_so_the_crop_does_not_jitter() -> None:
    previous = Region(320, 240, 200, 1.0)
    # 3% of the region's height is 6 px here: anything less, in both directions and in size, is noise.
    assert follow(previous, Region(325, 236, 205, 1.0), touches_edge=False) == previous
    assert follow(previous, Region(320, 240, 195, 1.0), touches_edge=False) == previous


def test_the_centre_eases_towards_the_person() -> None:
    previous = Region(320, 240, 200, 1.0)
    moved = follow(previous, Region(420, 240, 200, 1.0), touches_edge=False)
    assert moved is not None and moved.cy == 240 and moved.height == 200
    assert 320 < moved.cx < 420  # part of the way, not all of it
    # A still person: the region settles on them, then stays exactly where it is.
    target, region = Region(420, 180, 200, 1.0), previous
    regions = []
    for _ in range(20):
        region = follow(region, target, touches_edge=False)
        assert region is not None
        regions.append(region)
    assert abs(region.cx - 420) < 6 and abs(region.cy - 180) < 6
    assert len(set(regions[-5:])) == 1


def test_the_region_grows_at_once_and_shrinks_slowly() -> None:
    previous = Region(320, 240, 200, 1.0)
    grown = follow(previous, Region(320, 240, 300, 1.0), touches_edge=False)
    assert grown is not None and grown.height == 300
    shrunk = follow(previous, Region(320, 240, 100, 1.0), touches_edge=False)
    assert shrunk is not None and 180 <= shrunk.height < 200  # a step, not the jump to 100
    region: Region | None = previous
    heights = []
    for _ in range(60):
        assert region is not None
        region = follow(region, Region(320, 240, 100, 1.0), touches_edge=False)
        heights.append(region.height if region else None)
    # It shrinks step by step until what is left is within the dead band (3% of its height), then holds.
    assert heights == sorted(heights, reverse=True) and 100 < heights[-1] < 150
    assert len(set(heights[-10:])) == 1


def test_a_person_at_the_crops_edge_grows_it_at_once() -> None:
    previous = Region(320, 240, 200, 1.0)
    # The mask says the person is no bigger, but they reach the crop's edge: they go on beyond it.
    grown = follow(previous, Region(320, 240, 200, 1.0), touches_edge=True)
    assert grown is not None and grown.height >= 1.3 * 200
    bigger = follow(previous, Region(320, 240, 400, 1.0), touches_edge=True)
    assert bigger is not None and bigger.height == 400  # the larger of the two


def test_the_region_keeps_the_models_aspect_while_it_follows() -> None:
    previous = Region(320, 240, 180, 16 / 9)
    region = follow(previous, Region(200, 300, 250, 16 / 9), touches_edge=True)
    assert region is not None and region.aspect == previous.aspect


# --- canvas_size, paste, touches_edge ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "canvas"),
    [
        ((480, 640), (240, 320)),
        ((1080, 1920), (180, 320)),
        ((1920, 1080), (320, 180)),
        ((240, 320), (240, 320)),  # never larger than the frame
        ((120, 160), (120, 160)),
        ((1, 1000), (1, 320)),  # never empty
    ],
)
def test_the_canvas_keeps_the_frames_aspect_at_320_at_most(frame: tuple[int, int], canvas: tuple[int, int]) -> None:
    assert canvas_size(frame) == canvas


def test_a_crops_mask_lands_where_its_region_is_on_the_canvas() -> None:
    region = Region(320, 240, 200, 1.0)  # box (140, 340, 220, 420) in the frame: (70, 170, 110, 210) at half size
    assert region.box() == (140, 340, 220, 420)
    out = paste(torch.ones(1, 1, 256, 256), region, FRAME, canvas_size(FRAME))
    assert out.shape == (1, 1, 240, 320)
    expected = _mask((240, 320), slice(70, 170), slice(110, 210))
    assert torch.equal(out, expected)


def test_a_crops_mask_keeps_its_orientation() -> None:
    crop = torch.zeros(1, 1, 128, 128)
    crop[..., :64, :] = 1.0  # the person in the crop's top half
    out = paste(crop, Region(320, 240, 200, 1.0), FRAME, (480, 640))
    assert out[0, 0, 150:230, 230:410].min() >= 0.99  # the region's top half (rows 140-240)
    assert out[0, 0, 250:340, 230:410].max() <= 0.01  # its bottom half
    assert out[0, 0, :140].max() == 0 and out[0, 0, 340:].max() == 0 and out[0, 0, :, :220].max() == 0


def test_a_region_reaching_beyond_the_frame_is_clipped() -> None:
    crop = torch.zeros(1, 1, 100, 100)
    crop[..., :, 50:] = 1.0  # the crop's right half: the part inside the frame
    region = Region(0, 240, 200, 1.0)  # box (140, 340, -100, 100)
    out = paste(crop, region, FRAME, FRAME)
    assert out.shape == (1, 1, 480, 640)
    assert out[0, 0, 142:338, 2:98].min() >= 0.99  # interpolated across the crop's own edge at column 0
    assert out[0, 0, :, 100:].max() == 0 and out[0, 0, :140].max() == 0 and out[0, 0, 340:].max() == 0
    # Wholly outside: nothing pasted, and no error.
    assert paste(torch.ones(1, 1, 64, 64), Region(-500, -500, 100, 1.0), FRAME, (240, 320)).max() == 0


def _person_at(rows: slice, cols: slice, value: float = 1.0) -> torch.Tensor:
    return _mask((256, 256), rows, cols, value)


@pytest.mark.parametrize(
    ("rows", "cols"),
    [(slice(0, 100), slice(100, 150)), (slice(150, 256), slice(100, 150)), (slice(100, 150), slice(0, 50)),
     (slice(100, 150), slice(200, 256))],
)  # fmt: skip
def test_a_person_reaching_a_border_inside_the_frame_touches_the_edge(rows: slice, cols: slice) -> None:
    inside = Region(320, 240, 200, 1.0)  # wholly inside the frame
    assert touches_edge(_person_at(rows, cols), inside, FRAME)
    assert touches_edge(_person_at(rows, cols, 0.5), inside, FRAME)
    assert not touches_edge(_person_at(rows, cols, 0.49), inside, FRAME)  # a doubtful border is not the person


def test_a_person_clear_of_the_crops_borders_does_not_touch_it() -> None:
    assert not touches_edge(_person_at(slice(1, 255), slice(1, 255)), Region(320, 240, 200, 1.0), FRAME)


def test_a_border_on_or_beyond_the_frames_edge_is_not_an_edge_to_grow_past() -> None:
    # The person is cut by the frame there, not by the crop: growing would show only more black.
    assert not touches_edge(_person_at(slice(0, 100), slice(100, 150)), Region(320, 100, 200, 1.0), FRAME)  # top 0
    assert not touches_edge(_person_at(slice(150, 256), slice(100, 150)), Region(320, 400, 200, 1.0), FRAME)
    assert not touches_edge(_person_at(slice(100, 150), slice(0, 50)), Region(50, 240, 200, 1.0), FRAME)
    assert not touches_edge(_person_at(slice(100, 150), slice(200, 256)), Region(600, 240, 200, 1.0), FRAME)
    # ... while the same regions' borders inside the frame still count.
    assert touches_edge(_person_at(slice(150, 256), slice(100, 150)), Region(320, 100, 200, 1.0), FRAME)
    assert touches_edge(_person_at(slice(100, 150), slice(200, 256)), Region(50, 240, 200, 1.0), FRAME)
