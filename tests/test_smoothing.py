"""The smoothing's blend rule, pixel by pixel: lean on the previous mask only where the new value is doubtful
(uncertain, or barely changed); follow a confident change at once; damp more where the flow explains the motion."""

from __future__ import annotations

import pytest
import torch

from server.pipeline.smoothing import smooth_mask

pytestmark = pytest.mark.unit


def _px(value: float) -> torch.Tensor:
    return torch.full((1, 1, 4, 4), value)


def _blend(previous: float, current: float, strength: float, tracked: bool | None = None) -> float:
    flow = None if tracked is None else torch.full((1, 1, 4, 4), tracked)
    out = smooth_mask(_px(previous), _px(current), strength, flow)
    assert out.shape == (1, 1, 4, 4) and bool((out == out[0, 0, 0, 0]).all())  # the same rule for every pixel
    return float(out[0, 0, 0, 0])


def test_nothing_to_blend_with_gives_the_new_mask() -> None:
    current = torch.rand(1, 1, 24, 32)
    assert torch.equal(smooth_mask(None, current, 0.8), current)
    assert torch.equal(smooth_mask(torch.rand(1, 1, 24, 32), current, 0.0), current)  # strength 0: off
    # A new resolution: the old mask does not fit, so it is not used.
    assert torch.equal(smooth_mask(torch.rand(1, 1, 12, 16), current, 0.8), current)


def test_a_confident_change_is_followed_at_once() -> None:
    # The person moved: a pixel went from surely background to surely person.
    assert _blend(0.0, 1.0, 1.0) > 0.99
    assert _blend(1.0, 0.0, 1.0) < 0.01
    assert _blend(0.0, 0.999, 0.9) > 0.95
    # Less sure of the new value, it leans more on the past.
    assert _blend(0.0, 0.97, 0.9) < _blend(0.0, 0.999, 0.9)


def test_an_uncertain_pixel_leans_on_the_past_by_the_strength() -> None:
    # p = 0.5: the model does not know; the previous value counts as much as `strength` says.
    assert _blend(0.9, 0.5, 1.0) == pytest.approx(0.9)
    assert _blend(0.9, 0.5, 0.5) == pytest.approx(0.7)
    assert _blend(0.1, 0.5, 0.25) == pytest.approx(0.4)


def test_a_small_change_is_noise_and_held_back() -> None:
    # Confident both times, but a little different: flicker, not motion.
    out = _blend(0.97, 0.99, 1.0)
    assert 0.97 <= out < 0.975
    # The larger the change to a sure value, the more of it goes through.
    steps = (0.02, 0.1, 0.3, 0.6, 0.85)
    through = [(_blend(1.0 - d, 1.0, 1.0) - (1.0 - d)) / d for d in steps]
    assert through == sorted(through) and through[0] < 0.2 and through[-1] > 0.9


def test_an_unchanged_pixel_stays_exactly() -> None:
    for value in (0.0, 0.3, 0.5, 1.0):
        assert _blend(value, value, 1.0) == pytest.approx(value, abs=1e-7)


def test_the_blend_lies_between_the_two_masks_and_grows_with_the_strength() -> None:
    generator = torch.Generator().manual_seed(0)
    previous, current = torch.rand(1, 1, 48, 64, generator=generator), torch.rand(1, 1, 48, 64, generator=generator)
    low, high = torch.minimum(previous, current), torch.maximum(previous, current)
    distances = []
    for strength in (0.0, 0.3, 0.6, 1.0):
        out = smooth_mask(previous, current, strength)
        assert bool(((out >= low - 1e-6) & (out <= high + 1e-6)).all())
        distances.append(float((out - previous).abs().mean()))
    assert distances == sorted(distances, reverse=True) and distances[-1] < 0.5 * distances[0]


def test_the_inputs_are_not_changed() -> None:
    previous, current = torch.rand(1, 1, 24, 32), torch.rand(1, 1, 24, 32)
    tracked = current > 0.5
    kept = previous.clone(), current.clone(), tracked.clone()
    smooth_mask(previous, current, 0.9, tracked)
    assert torch.equal(previous, kept[0]) and torch.equal(current, kept[1]) and torch.equal(tracked, kept[2])


def test_where_the_flow_checks_out_a_confident_change_is_damped_more() -> None:
    # The previous mask was moved along a flow that passed its check: a big change there is likely flicker.
    untracked, tracked = _blend(0.0, 1.0, 1.0, tracked=False), _blend(0.0, 1.0, 1.0, tracked=True)
    assert untracked > 0.99 and 0.5 < tracked < 0.9
    assert _blend(0.0, 1.0, 1.0) == untracked  # no flow known: as untracked
    # A pixel the model is unsure of leans on the past all the same.
    assert _blend(0.9, 0.5, 1.0, tracked=True) == pytest.approx(0.9)
