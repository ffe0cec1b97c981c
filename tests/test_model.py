"""The PyTorch ports of the MediaPipe models (selfie, pose) against the TFLite reference interpreter."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ai_edge_litert.interpreter import Interpreter, OpResolverType
from PIL import Image

from models import WeightsMissingError, load_model, model_info
from models.weights import WEIGHTS, weights_path
from models.wrappers.tflite_model import TFLiteSegmenter
from models.zoo import BUILTINS

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("weights")]

TFLITE = {
    "general": "selfie_segmentation.tflite",
    "landscape": "selfie_segmentation_landscape.tflite",
    "fullbody": "pose_landmark_full.tflite",
}


def _reference(name: str, image: np.ndarray) -> np.ndarray:
    """The model's person probability by TFLite (the pose model by its reference kernels, the definition of
    the ops, rather than XNNPACK's reordered sums)."""
    # The selfie models' custom transposed convolution exists only in the default resolver.
    resolver = OpResolverType.BUILTIN_REF if name == "fullbody" else OpResolverType.AUTO
    interpreter = Interpreter(model_path=str(weights_path(TFLITE[name])), experimental_op_resolver_type=resolver)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image[None])
    interpreter.invoke()
    if name == "fullbody":  # the segmentation is one output of several, and a logit
        output = next(d for d in interpreter.get_output_details() if d["name"] == "Identity_2")
        logits = interpreter.get_tensor(output["index"])[0, ..., 0].astype(np.float64)
        return (1.0 / (1.0 + np.exp(-np.clip(logits, -80, 80)))).astype(np.float32)
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


@pytest.mark.parametrize(
    ("name", "runtime"),
    [
        ("general", "tflite"),
        ("general", "torch"),
        ("landscape", "tflite"),
        ("landscape", "torch"),
        ("fullbody", "tflite"),
        ("fullbody", "torch"),
    ],
)
def test_matches_tflite_reference(name: str, runtime: str, astronaut: np.ndarray, grace_hopper: np.ndarray) -> None:
    # What a CPU server runs, or the PyTorch port, which CUDA runs and export converts.
    model = load_model(name, "cpu", runtime=runtime != "torch")
    assert BUILTINS[model_info(name).name].cpu_runtime == runtime or runtime == "torch"
    assert isinstance(model, TFLiteSegmenter) == (runtime == "tflite")
    for label, image in _inputs(name, astronaut, grace_hopper).items():
        expected = _reference(name, image)
        with torch.inference_mode():
            got = model(torch.from_numpy(image).permute(2, 0, 1)[None])[0, 0].numpy()
        assert got.shape == expected.shape
        difference = np.abs(got - expected)
        if name == "fullbody":
            # Logits reach +-1700 here, so float32 rounding alone (in either implementation: each is
            # 1-2e-3 from a float64 run of the same graph at worst) moves a few boundary pixels by more.
            assert np.quantile(difference, 0.9999) <= 1e-3 and difference.max() <= 5e-3, label
        else:
            assert difference.max() <= 1e-3, label
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


@pytest.mark.cuda
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


def test_pose_detector_matches_tflite_reference(astronaut: np.ndarray, grace_hopper: np.ndarray) -> None:
    from models.nets.pose_detector import PoseDetector

    path = weights_path("pose_detection.tflite")
    detector = PoseDetector(path).eval()
    interpreter = Interpreter(model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    interpreter.allocate_tensors()
    outputs = {d["name"]: d["index"] for d in interpreter.get_output_details()}
    for label, photo in {"astronaut": astronaut, "grace_hopper": grace_hopper}.items():
        image = np.asarray(Image.fromarray(photo).resize((224, 224), Image.BILINEAR), np.float32) / 255.0
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image[None] * 2.0 - 1.0)
        interpreter.invoke()
        raw, logits = interpreter.get_tensor(outputs["Identity"])[0], interpreter.get_tensor(outputs["Identity_1"])[0]
        with torch.inference_mode():
            scores, keypoints = detector(torch.from_numpy(image).permute(2, 0, 1)[None])
        expected_scores = 1.0 / (1.0 + np.exp(-np.clip(logits[:, 0].astype(np.float64), -100, 100)))
        assert np.abs(scores[0].numpy() - expected_scores).max() <= 1e-3, label
        expected_points = raw[:, 4:12].reshape(-1, 4, 2) / 224.0 + detector.anchors.numpy()[:, None, :]
        assert np.abs(keypoints[0].numpy() - expected_points).max() <= 1e-4, label
        assert scores.max() > 0.5, f"{label}: a person is found"
