"""Modules that wrap a network to the zoo's contract: (N,3,H,W) RGB in [0,1] -> (N,1,H,W) probabilities."""

from .compiled import CompiledOnCPU
from .normalised import IMAGENET_MEAN, IMAGENET_STD, Segmenter
from .onnxruntime_model import METADATA_PREFIX, OnnxSegmenter
from .tflite_model import TFLiteSegmenter

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "METADATA_PREFIX",
    "CompiledOnCPU",
    "OnnxSegmenter",
    "Segmenter",
    "TFLiteSegmenter",
]
