"""The multi-person dev set (`backdrop crowd`) and `evaluate --subject` on it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from server.pipeline.config import SubjectPoint
from server.tools.crowd import make_crowd
from server.tools.evaluate import subject_for

from conftest import backdrop
from synthetic import make_portraits


@pytest.mark.unit
def test_bystanders_are_pasted_behind_the_subject_and_the_truth_is_theirs(tmp_path) -> None:
    source = make_portraits(tmp_path / "portraits", count=6)
    count = make_crowd(source, tmp_path / "crowd", seed=3, progress=False)
    assert count == 6
    for i in range(count):
        before = np.asarray(Image.open(source / "images" / f"{i:05d}.jpg"), np.float32)
        after = np.asarray(Image.open(tmp_path / "crowd" / "images" / f"{i:05d}.jpg"), np.float32)
        truth = np.asarray(Image.open(source / "masks" / f"{i:05d}.png")) >= 128
        assert np.array_equal(np.asarray(Image.open(tmp_path / "crowd" / "masks" / f"{i:05d}.png")) >= 128, truth)
        changed = np.abs(after - before).max(axis=-1) > 40
        assert changed[~truth].mean() > 0.02  # someone stands in the background now
        assert changed[truth].mean() < 0.01  # and the subject is in front of them (JPEG noise aside)
    again = make_crowd(source, tmp_path / "again", seed=3, progress=False)
    assert again == count
    first, second = (
        np.asarray(Image.open(d / "images" / "00002.jpg")) for d in (tmp_path / "crowd", tmp_path / "again")
    )
    assert np.array_equal(first, second)  # the same seed, the same set


@pytest.mark.unit
def test_a_click_lands_deepest_inside_the_labelled_person() -> None:
    truth = np.zeros((100, 200), bool)
    truth[40:100, 120:180] = True
    point = subject_for("click", truth)
    assert isinstance(point, SubjectPoint) and 0.6 < point.x < 0.9 and point.y > 0.6
    assert subject_for("main", truth) == "main" and subject_for("0.1,0.2", truth) == SubjectPoint(x=0.1, y=0.2)


def test_evaluate_a_subject_on_the_crowd(tmp_path) -> None:
    source = make_portraits(tmp_path / "portraits", count=4)
    made = backdrop("crowd", "--data", str(source), "--out", str(tmp_path / "crowd"))
    assert made.returncode == 0 and "4 images" in made.stdout, made.stderr
    run = backdrop("evaluate", "--data", str(tmp_path / "crowd"), "--subject", "click", "--json", "--limit", "4")
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["subject"] == "click" and result["images"] == 4 and 0.0 <= result["mean_iou"] <= 1.0
    bad = backdrop("evaluate", "--data", str(tmp_path / "crowd"), "--subject", "somebody")
    assert bad.returncode == 2 and "--subject" in bad.stderr and "all, main, click or X,Y" in bad.stderr
