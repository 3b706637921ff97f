"""gssm_jax: graph-structured sequential models in JAX. The everyday names: `import gssm_jax as gj`.

    graph = gj.GraphSpec.from_config(gj.get_family("four_by_four").config(alpha_x=1e-3, alpha_z=0.125))
    kernels = gj.sample_kernels(jax.random.key(0), graph)
    tokens = gj.sample_tokens(jax.random.key(1), graph, kernels, batch_size=64, length=256)
    rate = gj.entropy_rate(graph, kernels, tokens)              # EntropyRate(nats_per_token, standard_error)
    result = gj.train_and_evaluate(gj.load_config("base:size=tiny"), "runs/tiny")
    records = gj.read_metrics("runs/tiny")                      # one dict per logged step
    path = gj.write_report("runs/quickstart")                   # an Experiment 1 sweep's report.md
    runs = gj.load_runs("runs/quickstart")                      # its finished runs: learning curves

The stages of the data flow are subpackages, bottom first: `gj.gssm` (the generative model: graphs,
families, kernels), `gj.sampling`, `gj.inference` (the exact forward pass), `gj.data`, `gj.difficulty`
(measures, the two sides, the calibration search), `gj.learners` (the sequence models trained on the
tokens), `gj.training`, `gj.experiment1` (the sweep and its report), `gj.configs` and `gj.cli`; below
them the ground floor: `gj.keys` (the key tree), `gj.files` (the atomic writer), `gj.errors`,
`gj.locks` (one process per work directory), `gj.statistics`, `gj.parallel` (the device mesh) and `gj.threefry`.
"""

from __future__ import annotations

import importlib
import importlib.metadata

try:
    __version__ = importlib.metadata.version("gssm_jax")
except importlib.metadata.PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "unknown"

# name -> module defining it. Resolved on first use (PEP 562), so that `import gssm_jax.keys` or a config
# file does not pay for importing the training stack (flax, optax, orbax).
_EXPORTS = {
    "GraphSpec": "gssm_jax.gssm.graph",
    "GraphError": "gssm_jax.gssm.graph",
    "experiment1_graph_config": "gssm_jax.gssm.graph",
    "FAMILIES": "gssm_jax.gssm.families",
    "GraphFamily": "gssm_jax.gssm.families",
    "get_family": "gssm_jax.gssm.families",
    "sample_kernels": "gssm_jax.gssm.kernels",
    "conditional_tables": "gssm_jax.gssm.kernels",
    "sampling_tables": "gssm_jax.sampling.tables",
    "sample_tokens": "gssm_jax.sampling.sampler",
    "EntropyRate": "gssm_jax.inference.api",
    "entropy_rate": "gssm_jax.inference.api",
    "token_losses": "gssm_jax.inference.api",
    "log_likelihood": "gssm_jax.inference.api",
    "Measurer": "gssm_jax.difficulty.measurer",
    "calibrate_pair": "gssm_jax.difficulty.pipeline",
    "run_calibration": "gssm_jax.experiment1.calibration",
    "generate_dataset": "gssm_jax.data.generate",
    "load_dataset": "gssm_jax.data.load",
    "train_and_evaluate": "gssm_jax.training.loop",
    "read_metrics": "gssm_jax.training.run_directory",
    "run_experiment": "gssm_jax.experiment1.sweep",
    "load_runs": "gssm_jax.experiment1.runs",
    "write_report": "gssm_jax.experiment1.report",
}
_LOADERS = {"load_config": ("gssm_jax.configs", "load")}
_SUBPACKAGES = ("cli", "configs", "data", "difficulty", "errors", "experiment1", "files", "gssm", "inference", "keys",
                "learners", "locks", "parallel", "sampling", "statistics", "threefry", "training")

__all__ = sorted([*_EXPORTS, *_LOADERS])


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _LOADERS:
        module, attribute = _LOADERS[name]
        value = getattr(importlib.import_module(module), attribute)
    elif name in _SUBPACKAGES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module 'gssm_jax' has no attribute {name!r}; the public names are in gssm_jax.__all__")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, *_SUBPACKAGES})
