"""Image and video files through the pipeline, as the `process` command does."""
