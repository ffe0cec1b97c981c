"""A model name resolved once into a plan, the names a user may choose, and the pipeline reading the plan."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models import checkpoint
from models.names import ALIASES, MODEL_CHOICES, MODEL_CHOICES_TEXT, POLICY_NAMES
from models.zoo import BUILTINS, DETECTORS, POLICIES, ModelRegistry, Network, Plan
from server.pipeline.config import SessionConfig
from server.pipeline.frames import Frame, StreamState
from server.pipeline.pipeline import Pipeline

pytestmark = pytest.mark.unit


def _checkpoint(path: Path, size: tuple[int, int], name: str = "mine") -> Path:
    """A checkpoint file as far as registering reads it (no weights: nothing builds it here)."""
    checkpoint.save(checkpoint.Checkpoint("unet", size, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), {}, name), path)
    return path


def test_plans_say_what_each_name_runs() -> None:
    registry = ModelRegistry()
    general = registry.plan("general")
    network = Network("mediapipe-general", (256, 256))
    assert general.name == "mediapipe-general"
    assert (general.finder, general.region, general.whole_frame) == (network, network, network)
    assert general.networks == (network,) and general.aspect == 1.0 and not general.square
    landscape = registry.plan("landscape")
    assert landscape.region.input_size == (144, 256) and landscape.aspect == 256 / 144 and not landscape.square
    fullbody = registry.plan("fullbody")
    detector = Network("mediapipe-pose-detector", (224, 224), detector=True)
    assert fullbody.name == "mediapipe-pose" and fullbody.finder == detector and fullbody.square
    assert fullbody.region == fullbody.whole_frame == Network("mediapipe-pose", (256, 256))
    auto = registry.plan("auto")
    assert auto.name == "auto" and auto.finder == detector and auto.square
    assert (auto.region.name, auto.whole_frame.name) == ("mediapipe-pose", "mediapipe-general")
    assert [n.name for n in auto.networks] == ["mediapipe-pose-detector", "mediapipe-general", "mediapipe-pose"]
    with pytest.raises(KeyError, match="unknown model 'nope'"):
        registry.plan("nope")


def test_a_plan_is_made_once_per_name_and_renewed_by_a_registration(tmp_path: Path) -> None:
    registry = ModelRegistry()
    assert registry.plan("general") is registry.plan("general")
    assert registry.plan("mediapipe-general") == registry.plan("general")
    path = _checkpoint(tmp_path / "mine.pt", (64, 96))
    assert registry.register_file(path) == "mine"
    mine = registry.plan("mine")
    assert mine.name == "mine" and mine.region == Network("mine", (64, 96)) and mine.aspect == 1.5
    assert mine.finder == mine.whole_frame == mine.region and not mine.square
    # The same file, rewritten at another size and registered again: no plan made before survives.
    _checkpoint(path, (80, 80))
    registry.register_file(path)
    assert registry.plan("mine").region.input_size == (80, 80)
    assert registry.plan("general") == ModelRegistry().plan("general")


def test_the_names_a_user_may_choose(tmp_path: Path) -> None:
    assert MODEL_CHOICES == ("general", "landscape", "fullbody", "auto")
    assert MODEL_CHOICES_TEXT == "general, landscape, fullbody, auto"
    assert tuple(POLICIES) == POLICY_NAMES
    assert all(target in BUILTINS for target in ALIASES.values())
    assert all(set(BUILTINS) | set(DETECTORS) >= {p.finder, p.region, p.whole_frame} for p in POLICIES.values())
    registry = ModelRegistry()
    assert registry.choices() == list(MODEL_CHOICES)
    registry.register_file(_checkpoint(tmp_path / "b.pt", (64, 64), "b"))
    registry.register_file(_checkpoint(tmp_path / "a.pt", (64, 64), "a"))
    assert registry.choices() == [*MODEL_CHOICES, "b", "a"]
    for name in registry.choices():
        registry.plan(name)


class _CountingRegistry(ModelRegistry):
    def __init__(self) -> None:
        super().__init__()
        self.asked: list[str] = []

    def plan(self, name: str) -> Plan:
        self.asked.append(name)
        return super().plan(name)


def test_the_pipeline_resolves_a_frame_s_model_once_and_takes_a_plan_given(
    weights: None, astronaut: np.ndarray
) -> None:
    registry = _CountingRegistry()
    pipeline = Pipeline(device="cpu", registry=registry)
    for name in ("general", "landscape", "auto"):
        pipeline.warm(name)
    frames = [np.ascontiguousarray(np.roll(astronaut, 8 * i, axis=1)) for i in range(3)]
    config = SessionConfig(model="general")
    for region in (True, False):
        registry.asked.clear()
        pipeline.process([Frame(f, StreamState(), config.model_copy(update={"region": region})) for f in frames])
        assert registry.asked == ["general"] * 3, region
    # A frame that brings its plan is not resolved again, and runs what the plan says.
    plan = registry.plan("landscape")

    def run(config: SessionConfig, plan: Plan | None) -> tuple[list[np.ndarray], StreamState]:
        state, outputs = StreamState(), []
        for f in frames:
            result = pipeline.process([Frame(f, state, config, plan)])[0]
            state = result.state
            outputs.append(result.pixels)
        return outputs, state

    registry.asked.clear()
    given, state = run(config, plan)
    assert registry.asked == [] and state.smoothing.key is not None and state.smoothing.key[1] == plan.name
    resolved, _ = run(SessionConfig(model="landscape"), None)
    assert all(np.array_equal(a, b) for a, b in zip(given, resolved, strict=True))
