"""The PyTorch port of the MediaPipe selfie models against the TFLite reference interpreter."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ai_edge_litert.interpreter import Interpreter
from PIL import Image

from models import WeightsMissingError, load_model, model_info
from models.weights import WEIGHTS, weights_path

TFLITE = {"general": "selfie_segmentation.tflite", "landscape": "selfie_segmentation_landscape.tflite"}


def _reference(name: str, image: np.ndarray) -> np.ndarray:
    interpreter = Interpreter(model_path=str(weights_path(TFLITE[name])))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image[None])
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0, ..., 0]


def _inputs(name: str, astronaut: np.ndarray, grace_hopper: np.ndarray) -> dict[str, np.ndarray]:
    h, w = model_info(name).input_size
    resize = lambda a: np.asarray(Image.fromarray(a).resize((w, h), Image.BILINEAR), np.float32) / 255.0  # noqa: E731
    rng = np.random.default_rng(0)
    return {
        "astronaut": resize(astronaut),
        "grace_hopper": resize(grace_hopper),
        "random": rng.random((h, w, 3), dtype=np.float32),
    }


@pytest.mark.parametrize("name", ["general", "landscape"])
def test_matches_tflite_reference(name: str, astronaut: np.ndarray, grace_hopper: np.ndarray) -> None:
    model = load_model(name, "cpu")
    for label, image in _inputs(name, astronaut, grace_hopper).items():
        expected = _reference(name, image)
        with torch.inference_mode():
            got = model(torch.from_numpy(image).permute(2, 0, 1)[None])[0, 0].numpy()
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= 1e-3, label
        assert ((got >= 0.5) == (expected >= 0.5)).mean() >= 0.999, label
        if label != "random":
            assert 0.2 < (got >= 0.5).mean() < 0.9, f"{label}: a portrait should be partly person"


def test_public_api_shapes_and_batches() -> None:
    model = load_model("mediapipe-landscape", "cpu")
    x = torch.rand(3, 3, 144, 256)
    with torch.inference_mode():
        y = model(x)
        single = model(x[1:2])
    assert y.shape == (3, 1, 144, 256) and y.dtype == torch.float32
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    torch.testing.assert_close(y[1:2], single, atol=1e-5, rtol=0)


def test_bad_requests_are_clear() -> None:
    with pytest.raises(KeyError, match="unknown model 'selfie'"):
        load_model("selfie")
    with pytest.raises(ValueError, match="CUDA"):
        load_model("general", "cpu", torch.float16)


def test_missing_weights_say_what_to_run(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("BACKDROP_WEIGHTS", str(tmp_path))
    with pytest.raises(WeightsMissingError, match="backdrop fetch-weights"):
        load_model("general", "cpu")
    (tmp_path / "selfie_segmentation.tflite").write_bytes(b"not the model")
    with pytest.raises(WeightsMissingError, match="sha256"):
        load_model("general", "cpu")


def test_pinned_files_are_the_published_ones() -> None:
    assert WEIGHTS["selfie_segmentation.tflite"].sha256.startswith("9ee168ec")
    assert WEIGHTS["selfie_segmentation_landscape.tflite"].sha256.startswith("a77d03f4")
    for filename in WEIGHTS:
        assert weights_path(filename).stat().st_size > 200_000
    folder = weights_path("selfie_segmentation.tflite").parent
    assert "Apache License" in (folder / "LICENSE-mediapipe.txt").read_text()
    assert "MediaPipe" in (folder / "NOTICE.txt").read_text()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["general", "landscape"])
def test_fp16_on_cuda_matches_fp32(name: str, astronaut: np.ndarray, grace_hopper: np.ndarray) -> None:
    fp32 = load_model(name, "cuda")
    fp16 = load_model(name, "cuda", torch.float16)
    for image in _inputs(name, astronaut, grace_hopper).values():
        x = torch.from_numpy(image).permute(2, 0, 1)[None].cuda()
        with torch.inference_mode():
            a, b = fp32(x), fp16(x.half()).float()
        assert (a - b).abs().max().item() <= 2e-2
        assert ((a >= 0.5) == (b >= 0.5)).float().mean().item() >= 0.995
