"""The model registry: built-in models described by data, trained files registered by name, loading."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import nn

from .checkpoint import load as load_checkpoint
from .names import ALIASES as ALIASES  # the names a user may choose, re-exported (models.names has no torch)
from .names import MODEL_CHOICES as MODEL_CHOICES
from .names import MODEL_CHOICES_TEXT as MODEL_CHOICES_TEXT
from .names import POLICY_NAMES as POLICY_NAMES
from .nets.pose import pose_segmenter
from .nets.pose_detector import pose_detector
from .nets.selfie import SelfieSegmenter, load_tflite
from .weights import weights_path
from .wrappers.onnxruntime_model import OnnxSegmenter
from .wrappers.tflite_model import TFLiteSegmenter

MODEL_SUFFIXES = (".pt", ".pth", ".onnx")


@dataclass(frozen=True)
class ModelInfo:
    """What a caller needs to feed a model: its input size (H, W)."""

    name: str
    input_size: tuple[int, int]
    description: str
    path: Path | None = None  # the file a registered model comes from
    finder: str | None = None  # the model whose whole-frame passes find the person to track; None: itself


@dataclass(frozen=True)
class Network:
    """One network a plan runs: its canonical name, its input size (H, W), and whether it is a detector
    (boxes around people, see DETECTORS) rather than a segmenter."""

    name: str
    input_size: tuple[int, int]
    detector: bool = False


@dataclass(frozen=True)
class Plan:
    """Everything the pipeline needs to know about a model (or policy such as `auto`) a stream names,
    resolved once per name by `ModelRegistry.plan`."""

    name: str  # the canonical name chosen (a model, or a policy)
    finder: Network  # whole frames, to find the person whose region is tracked
    region: Network  # the tracked region
    whole_frame: Network  # whole frames when there is no region (a close-up, tracking off)
    aspect: float  # width / height of the region network's input: the regions' aspect
    # Whether a region stays one even when the person spans the frame one way (see pipeline.region.region_around):
    # the pose segmenter, found by a detector, was trained on such squares around a person.
    square: bool

    @property
    def networks(self) -> tuple[Network, ...]:
        """The distinct networks this plan runs, finder first."""
        return tuple(dict.fromkeys((self.finder, self.whole_frame, self.region)))


@dataclass(frozen=True)
class Policy:
    """A name a session may choose like a model that picks networks by the scene: canonical model names."""

    info: ModelInfo  # as the region network's, under the policy's name
    finder: str
    region: str
    whole_frame: str


def _selfie(input_size: tuple[int, int], path: Path) -> nn.Module:
    return load_tflite(SelfieSegmenter(input_size), path)


@dataclass(frozen=True)
class BuiltinModel:
    """A model shipped with the project: its network and the pinned weights file it reads."""

    info: ModelInfo
    weights: str  # a file name of models.weights.WEIGHTS
    network: Callable[[tuple[int, int], Path], nn.Module] = _selfie
    # What runs it in float32 on a CPU, by measurement (`backdrop bench`): "torch" (compiled with --compile)
    # or "tflite" (the weights file itself, in Google's LiteRT interpreter; ONNX Runtime, tried too, was slower).
    cpu_runtime: str = "torch"
    # For "tflite": the file's output that is the segmentation (default: its only one), and whether it is a logit.
    tflite_output: str | None = None
    tflite_logits: bool = False

    def build(self) -> nn.Module:
        return self.network(self.info.input_size, weights_path(self.weights))


BUILTINS: dict[str, BuiltinModel] = {
    # In the pipeline on one core, LiteRT's model stage took 0.71x the compiled port's (general, 640x480).
    "mediapipe-general": BuiltinModel(
        ModelInfo("mediapipe-general", (256, 256), "MediaPipe general, 256x256"),
        "selfie_segmentation.tflite",
        cpu_runtime="tflite",
    ),
    "mediapipe-landscape": BuiltinModel(
        ModelInfo("mediapipe-landscape", (144, 256), "MediaPipe landscape, 144x256"),
        "selfie_segmentation_landscape.tflite",
        cpu_runtime="tflite",
    ),
    "mediapipe-pose": BuiltinModel(
        ModelInfo(
            "mediapipe-pose",
            (256, 256),
            "MediaPipe Pose (full) segmentation, 256x256, in the region around the person",
            finder="mediapipe-pose-detector",
        ),
        "pose_landmark_full.tflite",
        pose_segmenter,
        # LiteRT 0.56x ONNX Runtime's time on one core (alternating in one process); ONNX Runtime had measured
        # 33-45 ms a frame against 75-85 eager and 66-78 compiled.
        cpu_runtime="tflite",
        tflite_output="Identity_2",
        tflite_logits=True,
    ),
}
# Networks that find people rather than segment them: a plan's finder may name one.
DETECTORS: dict[str, BuiltinModel] = {
    "mediapipe-pose-detector": BuiltinModel(
        ModelInfo("mediapipe-pose-detector", (224, 224), "MediaPipe Pose detector, 224x224 letterboxed"),
        "pose_detection.tflite",
        pose_detector,
    ),
}
PEOPLE_DETECTOR = "mediapipe-pose-detector"
POLICIES = {
    "auto": Policy(
        ModelInfo("auto", (256, 256), "fullbody around a person further away, general on a close-up"),
        finder="mediapipe-pose-detector",
        region="mediapipe-pose",
        whole_frame="mediapipe-general",
    ),
}


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def check_precision(device: torch.device, dtype: torch.dtype) -> None:
    """fp16 is offered on CUDA only, where it is fast; CPU kernels for half are slow or missing."""
    if dtype == torch.float16 and device.type != "cuda":
        raise ValueError("fp16 inference needs a CUDA device")


class ModelRegistry:
    """The models one owner (a server, a command) can load: the built-ins plus the files it registered."""

    def __init__(self) -> None:
        self._files: dict[str, tuple[ModelInfo, Callable[[], nn.Module]]] = {}
        self._plans: dict[str, Plan] = {}  # by the name asked for (an alias too); renewed by register_file

    def names(self) -> list[str]:
        """Canonical names: built-ins first, then registered files in registration order."""
        return [*BUILTINS, *POLICIES, *self._files]

    def choices(self) -> list[str]:
        """The names a user may choose, as the page shows them: the aliases and policies (MODEL_CHOICES:
        general, landscape, fullbody, auto), then registered files in registration order."""
        return [*MODEL_CHOICES, *self._files]

    def resolve(self, name: str) -> str:
        """Canonical model name for a name or alias; raises KeyError for unknown names."""
        canonical = ALIASES.get(name, name)
        if canonical not in BUILTINS and canonical not in POLICIES and canonical not in self._files:
            choices = [*BUILTINS, *ALIASES, *POLICIES, *self._files]
            raise KeyError(f"unknown model {name[:64]!r}; choose one of {', '.join(choices)}")
        return canonical

    def info(self, name: str) -> ModelInfo:
        canonical = self.resolve(name)
        if canonical in POLICIES:
            return POLICIES[canonical].info
        return BUILTINS[canonical].info if canonical in BUILTINS else self._files[canonical][0]

    def load_detector(
        self, name: str, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> nn.Module:
        """A person detector in eval mode (see models.nets.pose_detector)."""
        device = torch.device(device) if device is not None else default_device()
        check_precision(device, dtype)
        return DETECTORS[name].build().eval().to(device=device, dtype=dtype)

    def plan(self, name: str) -> Plan:
        """What a stream naming `name` runs (a plain model does everything itself, unless its info names a
        finder), worked out once per name; raises KeyError for unknown names."""
        plans = self._plans  # register_file replaces the dict: a plan made meanwhile lands in the old one
        plan = plans.get(name)
        if plan is None:
            plan = plans[name] = self._make_plan(self.resolve(name))
        return plan

    def _make_plan(self, canonical: str) -> Plan:
        policy = POLICIES.get(canonical)
        if policy is not None:
            finder, region, whole_frame = policy.finder, policy.region, policy.whole_frame
        else:
            finder, region, whole_frame = self.info(canonical).finder or canonical, canonical, canonical
        region_network = self._network(region)
        height, width = region_network.input_size
        finder_network = self._network(finder)
        return Plan(
            name=canonical,
            finder=finder_network,
            region=region_network,
            whole_frame=self._network(whole_frame),
            aspect=width / height,
            square=finder_network.detector,  # the pose segmenter, the one a detector finds for, wants its square
        )

    def people_detector(self) -> Network:
        """The detector that tells people apart (one detection per person), whatever a plan runs."""
        return self._network(PEOPLE_DETECTOR)

    def _network(self, canonical: str) -> Network:
        if canonical in DETECTORS:
            return Network(canonical, DETECTORS[canonical].info.input_size, detector=True)
        return Network(canonical, self.info(canonical).input_size)

    def register_file(self, path: Path | str, name: str | None = None) -> str:
        """Make a trained checkpoint (.pt) or an exported ONNX model (.onnx) loadable by name; returns the name.

        The name is `name`, else the one stored in the file, else the file's stem. Registering the same
        file twice is harmless; another file under a taken name is refused.
        """
        path = Path(path).resolve()
        if not path.is_file():
            raise FileNotFoundError(f"model file {path} does not exist")
        builder: Callable[[], nn.Module]
        if path.suffix == ".onnx":
            probe = OnnxSegmenter(path, threads=1)
            stored, size, kind = probe.metadata.get("name"), probe.input_size, "ONNX Runtime"
            builder = partial(OnnxSegmenter, path)
        else:
            checkpoint = load_checkpoint(path)
            stored, size, kind = checkpoint.name, checkpoint.input_size, checkpoint.arch
            builder = partial(_checkpoint_model, path)
        name = name or stored or path.stem
        if name in BUILTINS or name in ALIASES or name in POLICIES:
            raise ValueError(f"{path}: the name {name!r} belongs to a built-in model; rename the file or pass a name")
        if name in self._files and self._files[name][0].path != path:
            raise ValueError(f"{path}: a model named {name!r} is already loaded from {self._files[name][0].path}")
        info = ModelInfo(name, (size[0], size[1]), f"{kind}, {size[0]}x{size[1]}, {path.name}", path)
        self._files[name] = (info, builder)
        self._plans = {}  # no plan made before outlives a registration (a file registered again may have changed)
        return name

    def resolve_arg(self, value: str) -> str:
        """A command-line --model value: a model name, or a checkpoint/ONNX file (registered on the way)."""
        known = value in ALIASES or value in BUILTINS or value in POLICIES or value in self._files
        if not known and Path(value).suffix in MODEL_SUFFIXES:
            return self.register_file(value)
        return self.resolve(value)

    def load(
        self,
        name: str,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        runtime: bool = True,
    ) -> nn.Module:
        """A ready model in eval mode: (N,3,H,W) RGB in [0,1] at its input size -> (N,1,H,W) probabilities.

        On a CPU, a built-in model runs in its `cpu_runtime`; `runtime=False` gives its PyTorch network
        there too (what export converts)."""
        device = torch.device(device) if device is not None else default_device()
        check_precision(device, dtype)
        canonical = self.plan(name).region.name
        builtin = BUILTINS.get(canonical)
        served = builtin.cpu_runtime if builtin is not None and runtime and device.type == "cpu" else "torch"
        if builtin is not None and served == "tflite":
            return TFLiteSegmenter(weights_path(builtin.weights), builtin.tflite_output, builtin.tflite_logits)
        model = builtin.build() if builtin is not None else self._files[canonical][1]()
        # nn.Module.to takes memory_format; torch's type stubs miss it.
        return model.eval().to(device=device, dtype=dtype, memory_format=torch.channels_last)  # type: ignore[call-overload]


def _checkpoint_model(path: Path) -> nn.Module:
    return load_checkpoint(path).model()


def load_model(
    name: str, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32, runtime: bool = True
) -> nn.Module:
    """A built-in model by name or alias, or a checkpoint/ONNX file by path (see `ModelRegistry.load`)."""
    registry = ModelRegistry()
    return registry.load(registry.resolve_arg(name), device, dtype, runtime)


def model_info(name: str) -> ModelInfo:
    """A built-in model's info by name or alias, or a checkpoint/ONNX file's by path."""
    registry = ModelRegistry()
    return registry.info(registry.resolve_arg(name))
