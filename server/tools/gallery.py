"""Failure-case previews: the worst images of an evaluation, side by side."""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

THUMB_HEIGHT = 240


@dataclass
class Case:
    name: str
    iou: float
    image: np.ndarray  # (H,W,3) uint8
    truth: np.ndarray  # (H,W) bool
    prediction: np.ndarray  # (H,W) bool


def _overlay(case: Case) -> np.ndarray:
    """Image with false positives in red and false negatives in blue."""
    out = case.image.astype(np.float32)
    fp = case.prediction & ~case.truth
    fn = ~case.prediction & case.truth
    out[fp] = 0.4 * out[fp] + 0.6 * np.array([255, 0, 0])
    out[fn] = 0.4 * out[fn] + 0.6 * np.array([0, 80, 255])
    return out.astype(np.uint8)


def _row(case: Case) -> Image.Image:
    panels = [
        case.image,
        np.repeat(case.truth[..., None] * 255, 3, 2),
        np.repeat(case.prediction[..., None] * 255, 3, 2),
        _overlay(case),
    ]
    h, w = case.truth.shape
    tw = max(1, round(w * THUMB_HEIGHT / h))
    row = Image.new("RGB", (4 * tw, THUMB_HEIGHT + 18), "white")
    for k, panel in enumerate(panels):
        row.paste(Image.fromarray(panel.astype(np.uint8)).resize((tw, THUMB_HEIGHT)), (k * tw, 18))
    ImageDraw.Draw(row).text(
        (4, 3), f"{case.name}  IoU {case.iou:.3f}   image | truth | prediction | errors (red FP, blue FN)", fill="black"
    )
    return row


def write_gallery(cases: list[Case], path: Path) -> None:
    """PNG (rows stacked) or HTML (one row each, images embedded) by the file's suffix."""
    rows = [_row(c) for c in cases]
    if path.suffix.lower() in (".html", ".htm"):
        parts = ["<!doctype html><meta charset=utf-8><title>Backdrop failure cases</title><h1>Worst cases</h1>"]
        for case, row in zip(cases, rows, strict=True):
            buf = io.BytesIO()
            row.save(buf, format="PNG")
            data = base64.b64encode(buf.getvalue()).decode()
            parts.append(
                f"<h2>{html.escape(case.name)} — IoU {case.iou:.3f}</h2><img src='data:image/png;base64,{data}'>"
            )
        path.write_text("\n".join(parts))
        return
    width = max((r.width for r in rows), default=1)
    sheet = Image.new("RGB", (width, sum(r.height for r in rows) or 1), "white")
    y = 0
    for row in rows:
        sheet.paste(row, (0, y))
        y += row.height
    sheet.save(path)
