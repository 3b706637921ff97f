"""Training: device mesh, pure train step, resumable loop, checkpoints, evaluation, run-directory files."""
