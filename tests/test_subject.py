"""Subject selection: the chosen person stays, everyone else becomes background, frame after frame."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from server.pipeline.config import SessionConfig, SubjectPoint
from server.pipeline.frames import StreamState
from server.pipeline.pipeline import Pipeline
from server.pipeline.subject import REACQUIRE, SubjectState, keep_subject
from server.tools.client import Peer

from conftest import LEFT_FACE, RIGHT_FACE, open_session, two_people

GREEN = (0, 255, 0)


def people(*boxes: tuple[int, int, int, int], size: tuple[int, int] = (120, 160)) -> torch.Tensor:
    """A (1,1,h,w) mask with a soft-edged person in each (top, bottom, left, right) box."""
    mask = np.zeros(size, np.float32)
    for top, bottom, left, right in boxes:
        mask[top:bottom, left:right] = 1.0
    return torch.from_numpy(cv2.GaussianBlur(mask, (5, 5), 1.0))[None, None]


def kept(mask: torch.Tensor, box: tuple[int, int, int, int]) -> float:
    """The mean of the mask inside a box."""
    top, bottom, left, right = box
    return float(mask[0, 0, top:bottom, left:right].mean())


LEFT, RIGHT = (30, 110, 20, 60), (40, 110, 110, 140)  # a larger person on the left, a smaller one on the right


@pytest.mark.unit
@pytest.mark.parametrize(
    ("choice", "stays", "goes"),
    [
        (SubjectPoint(x=0.8, y=0.6), RIGHT, LEFT),  # on the person on the right
        (SubjectPoint(x=0.25, y=0.1), LEFT, RIGHT),  # above the left one's head: the nearest person
        ("main", LEFT, RIGHT),  # the larger, nearer the centre
    ],
)
def test_the_chosen_person_stays_and_the_other_goes(choice, stays, goes) -> None:
    mask, state = keep_subject(people(LEFT, RIGHT), choice, SubjectState())
    assert kept(mask, stays) > 0.9
    assert kept(mask, goes) == 0.0
    assert state.kept is not None and state.absent == 0


@pytest.mark.unit
def test_everyone_is_kept_by_default() -> None:
    mask = people(LEFT, RIGHT)
    out, _ = keep_subject(mask, "all", SubjectState())
    assert torch.equal(out, mask)


@pytest.mark.unit
def test_the_subject_is_followed_as_they_move_and_others_move_in() -> None:
    state = SubjectState()
    choice = SubjectPoint(x=0.25, y=0.6)
    for step in range(20):  # the subject walks right, 3 px a frame; a newcomer appears on the far right
        subject = (30, 110, 20 + 3 * step, 60 + 3 * step)
        others = [(50, 110, 130, 155)] if step >= 5 else []
        mask, state = keep_subject(people(subject, *others), choice, state)
        assert kept(mask, subject) > 0.9, step
        for other in others:
            assert kept(mask, other) == 0.0, step


@pytest.mark.unit
def test_a_limb_that_comes_apart_stays_and_someone_touching_is_cut_back() -> None:
    choice = SubjectPoint(x=0.25, y=0.6)
    _, state = keep_subject(people(LEFT, (60, 70, 55, 80)), choice, SubjectState())  # an arm held out
    arm = (60, 70, 65, 80)  # the elbow fades below the threshold: the forearm is apart from the body
    mask, state = keep_subject(people(LEFT, arm), choice, state)
    assert kept(mask, arm) > 0.5
    bystander = (30, 110, 60, 150)  # pressed against the subject: one part with them
    mask, state = keep_subject(people(LEFT, bystander), choice, state)
    assert kept(mask, LEFT) > 0.9
    assert kept(mask, (30, 110, 95, 150)) == 0.0  # beyond the reach of the subject and their arm


@pytest.mark.unit
def test_a_subject_who_leaves_is_replaced_only_after_a_while() -> None:
    choice = SubjectPoint(x=0.8, y=0.6)
    _, state = keep_subject(people(LEFT, RIGHT), choice, SubjectState())
    for _ in range(REACQUIRE):  # the right person has left; the left one is not shown in their place
        mask, state = keep_subject(people(LEFT), choice, state)
        assert float(mask.max()) == 0.0
    mask, state = keep_subject(people(LEFT), choice, state)
    assert kept(mask, LEFT) > 0.9  # gone long enough: the main person is the subject now
    _, fresh = keep_subject(people(LEFT, RIGHT), SubjectPoint(x=0.8, y=0.6), state)
    assert fresh.choice == choice  # the same choice keeps its pick...
    mask, _ = keep_subject(people(LEFT, RIGHT), SubjectPoint(x=0.81, y=0.6), state)
    assert kept(mask, RIGHT) > 0.9 and kept(mask, LEFT) == 0.0  # ...a new one picks again


@pytest.mark.unit
def test_points_are_checked_and_read_from_query_strings() -> None:
    assert SessionConfig(subject="0.25,0.5").subject == SubjectPoint(x=0.25, y=0.5)
    assert SessionConfig(subject={"x": 1, "y": 0}).subject == SubjectPoint(x=1.0, y=0.0)
    for bad in ("1.5,0.5", "left,top", "someone", {"x": 0.5}):
        with pytest.raises(ValueError, match="subject"):
            SessionConfig(subject=bad)


def green_share(frame: np.ndarray, box: tuple[int, int, int, int]) -> float:
    top, bottom, left, right = box
    part = frame[top:bottom, left:right].astype(int)
    return float((np.abs(part - GREEN).max(axis=-1) < 60).mean())


@pytest.mark.unit
@pytest.mark.parametrize("region", [True, False])
def test_a_point_keeps_that_person_in_the_composite(
    pipeline: Pipeline, astronaut: np.ndarray, grace_hopper: np.ndarray, region: bool
) -> None:
    frame = two_people(astronaut, grace_hopper)
    for subject, face, other in (("0.75,0.6", RIGHT_FACE, LEFT_FACE), ("0.25,0.6", LEFT_FACE, RIGHT_FACE)):
        config = SessionConfig(mode="color", color="#00ff00", subject=subject, region=region)
        state = StreamState()
        for _ in range(3):
            result = pipeline.process_one(frame, state, config)
            state = result.state
        assert green_share(result.pixels, other) > 0.95, subject  # the other person is background now
        assert green_share(result.pixels, face) < 0.1, subject


@pytest.mark.e2e
async def test_a_session_keeps_the_person_picked_and_changes_when_another_is_picked(
    make_client, astronaut: np.ndarray, grace_hopper: np.ndarray
) -> None:
    frame = two_people(astronaut, grace_hopper)
    client = await make_client()
    peer = Peer([frame])
    await open_session(client, peer, {"mode": "color", "color": "#00ff00", "subject": {"x": 0.75, "y": 0.6}})
    try:
        got = await peer.frames(15)
        assert green_share(got[-1], LEFT_FACE) > 0.9 and green_share(got[-1], RIGHT_FACE) < 0.1
        reply = await peer.send_config({"subject": {"x": 0.25, "y": 0.6}})  # a click on the other person
        assert reply["config"]["subject"] == {"x": 0.25, "y": 0.6}
        got = await peer.frames(15)
        assert green_share(got[-1], RIGHT_FACE) > 0.9 and green_share(got[-1], LEFT_FACE) < 0.1
        reply = await peer.send_config({"subject": "all"})  # back to everyone
        got = await peer.frames(15)
        assert green_share(got[-1], RIGHT_FACE) < 0.1 and green_share(got[-1], LEFT_FACE) < 0.3
    finally:
        await peer.close()
