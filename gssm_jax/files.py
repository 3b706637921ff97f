"""The one atomic file writer: a reader sees the old file or the whole new one, never a part of it.

Every file the library writes (dataset shards and metadata, run files, calibrations, reports) goes
through `write_bytes`: the data goes to a hidden temporary file of the writer's own in the same directory, which is
flushed and fsynced, renamed over the target, and then the directory is fsynced, so after the call
returns the new file survives a crash or a power cut (the rename alone is atomic but not durable).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
from typing import Any

import numpy as np


def write_bytes(path: str | os.PathLike, data: bytes | memoryview) -> str:
    """Writes `data` to `path` atomically and durably (see the module docstring).

    Returns:
      the sha256 hex digest of `data`.
    """
    path = os.fspath(path)
    directory, name = os.path.split(os.path.abspath(path))
    # One temporary name per writer: processes writing the same file at once (e.g. two worker processes caching
    # the same held-out losses) must not rename each other's temporary away.
    temporary = os.path.join(directory, f".{name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(temporary, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    return hashlib.sha256(data).hexdigest()


def write_text(path: str | os.PathLike, text: str) -> None:
    """Writes `text` (UTF-8) to `path` atomically and durably."""
    write_bytes(path, text.encode())


def write_json(path: str | os.PathLike, value: Any) -> None:
    """Writes `value` as indented JSON (sorted keys, final newline) to `path` atomically and durably."""
    write_text(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def write_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Writes `arrays` as an uncompressed `.npz` to `path` atomically and durably."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_bytes(path, buffer.getbuffer())


def write_figure(path: str | os.PathLike, figure: Any, dpi: int = 120) -> None:
    """Writes a matplotlib `figure` as PNG to `path` atomically and durably."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    write_bytes(path, buffer.getbuffer())
