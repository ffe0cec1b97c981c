"""Training on labelled portrait folders: data, split, losses, metrics, the training loop."""
