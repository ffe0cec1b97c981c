"""Shipping a model to other runtimes: ONNX, TorchScript, TFLite; int8 quantization and pruning."""
