"""The held-out set's exact losses are computed once and shared by sibling runs (issue 12)."""

import jax
import numpy as np
import pytest

from gssm_jax.gssm.graph import GraphSpec, experiment1_graph_config
from gssm_jax.gssm.kernels import sample_kernels
from gssm_jax.training import evaluation


def test_sibling_runs_share_the_exact_losses_and_other_sets_recompute(tmp_path, monkeypatch):
    graph = GraphSpec.from_config(experiment1_graph_config(2, 2, 3, 0.5, 0.5))
    kernels = sample_kernels(jax.random.key(0), graph)
    tokens = evaluation.heldout_tokens(graph, kernels, 4, 8, eval_seed=1)
    identity = {"graph": "tiny", "seed": 0, "eval_seed": 1, "num_sequences": 4, "length": 8}
    first = evaluation.cached_optimal_losses(str(tmp_path / "cell" / "small"), graph, kernels, tokens, identity)
    assert first.shape == (4, 8) and np.all(np.isfinite(first))
    assert (tmp_path / "cell" / "optimal_losses").is_dir()

    def no_forward_pass(*args, **kwargs):
        raise AssertionError("the forward pass ran although the losses were cached")

    monkeypatch.setattr(evaluation.inference, "token_losses", no_forward_pass)
    shared = evaluation.cached_optimal_losses(str(tmp_path / "cell" / "large"), graph, kernels, tokens, identity)
    np.testing.assert_array_equal(shared, first)
    with pytest.raises(AssertionError, match="forward pass ran"):
        evaluation.cached_optimal_losses(str(tmp_path / "cell" / "large"), graph, kernels, tokens,
                                         {**identity, "eval_seed": 2})
