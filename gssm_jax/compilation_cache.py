"""JAX's persistent compilation cache: a program of a shape compiled before (by any process) loads at once.

Every run of one shape (the cells of a sweep, a rerun, the next process of a resumed run) compiles the same
programs; with the cache, only the first process pays for them. The directory is `$GSSM_JAX_CACHE_DIR`
(default `~/.cache/gssm_jax/jax`; set it empty to turn the cache off). A cache directory configured
already (`jax.config.update("jax_compilation_cache_dir", ...)` or `JAX_COMPILATION_CACHE_DIR`) is kept.
"""

from __future__ import annotations

import os

import jax

ENVIRONMENT_VARIABLE = "GSSM_JAX_CACHE_DIR"
DEFAULT_DIRECTORY = os.path.join("~", ".cache", "gssm_jax", "jax")
# JAX caches only programs that took at least this long to compile (its default, 1 s, skips most of a small
# run's programs: the tiny step compiles in about a second, its evaluation and sampling in a fraction).
MIN_COMPILE_SECONDS = 0.1


def enable() -> str | None:
    """Turns the persistent compilation cache on (module docstring); returns its directory, or None if off."""
    configured = jax.config.jax_compilation_cache_dir
    if configured:
        return configured
    directory = os.environ.get(ENVIRONMENT_VARIABLE, DEFAULT_DIRECTORY)
    if not directory:
        return None
    directory = os.path.abspath(os.path.expanduser(directory))
    os.makedirs(directory, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    return directory
