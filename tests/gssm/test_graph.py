"""GraphSpec: parsing, time semantics and every validation error a user can cause."""

import ml_collections
import pytest

from gssm_jax.gssm.graph import GraphError, GraphSpec, experiment1_graph_config


def _node(name, states=2, alpha=1.0, parents=(), **extra):
    return {"name": name, "states": states, "alpha": alpha, "parents": list(parents), **extra}


def _graph(*nodes):
    return {"nodes": list(nodes)}


def test_experiment1_graph_inputs_and_shapes():
    graph = GraphSpec.from_config(experiment1_graph_config(4, 4, 32, 1e-3, 0.125))
    assert graph.observed == "X"
    assert graph.hidden_order == ("Z1", "Z2", "Z3", "Z4")
    assert graph.inputs("Z2") == ("Z2", "X")  # own previous value first, then X[t-1]
    assert graph.kernel_shape("Z2") == (4, 32, 4)
    assert graph.inputs("X") == ("Z1", "Z2", "Z3", "Z4")
    assert graph.kernel_shape("X") == (4, 4, 4, 4, 32)
    assert graph.vocab_size == 32
    assert graph.num_latent_states == 256
    assert hash(graph) == hash(GraphSpec.from_config(experiment1_graph_config(4, 4, 32, 1e-3, 0.125)))


def test_config_dict_and_seed_aliases():
    config = ml_collections.ConfigDict({"nodes": [
        {"name": "Z", "state_dim": 3, "alpha": 0.1, "parents": ["X"], "kernel_type": "product"},
        {"name": "X", "state_dim": 5, "alpha": 0.2, "parents": ["Z"]},
    ]})
    graph = GraphSpec.from_config(config)
    assert graph.node("Z").states == 3
    assert graph.node("Z").kernel == "product"
    assert graph.node("X").observed


def test_hidden_order_is_topological():
    graph = GraphSpec.from_config(_graph(
        _node("C", parents=["B"]), _node("A", parents=["X"]), _node("B", parents=["A"]), _node("X", parents=["C"])))
    assert graph.hidden_order == ("A", "B", "C")


def test_observed_flag_picks_non_x_node():
    graph = GraphSpec.from_config(_graph(_node("Z"), _node("token", parents=["Z"], observed=True)))
    assert graph.observed == "token"


@pytest.mark.parametrize(
    "config, message",
    [
        (_graph(_node("Z", parents=["W"]), _node("X", parents=["Z"])), "'W', which is not a node"),
        (_graph(_node("Z"), _node("Z"), _node("X", parents=["Z"])), "duplicate node name 'Z'"),
        (_graph(_node("A", parents=["B"]), _node("B", parents=["A"]), _node("X", parents=["A"])), "A -> B -> A"),
        (_graph(_node("Z"), _node("Y", parents=["Z"])), "no observed node"),
        (_graph(_node("Z"), _node("X", parents=["Z"], observed=True), _node("Y", parents=["Z"], observed=True)),
         "2 observed nodes"),
        (_graph(_node("Z", states=1), _node("X", parents=["Z"])), "at least 2 states"),
        (_graph(_node("Z", alpha=0.0), _node("X", parents=["Z"])), "alpha is 0.0"),
        (_graph(_node("Z", alpha=-1.0), _node("X", parents=["Z"])), "alpha is -1.0"),
        (_graph(_node("Z", alpha=float("nan")), _node("X", parents=["Z"])), "alpha is nan"),
        (_graph(_node("Z", alpha=float("inf")), _node("X", parents=["Z"])), "alpha is inf"),
        (_graph(_node("Z", mode="sticky"), _node("X", parents=["Z"])), "valid modes are"),
        (_graph(_node("Z", kernel="lowrank"), _node("X", parents=["Z"])), "valid kernels are"),
        (_graph(_node("Z"), _node("X", parents=["Z"], mode="slow")), "mode is 'slow'"),
        (_graph(_node("Z"), _node("X")), "observed node must read at least one hidden node"),
        (_graph(_node("Z"), _node("X", states=2**31 + 1, parents=["Z"])), "at most 2**31 states"),
        (_graph(_node("Z", parents=["Z"]), _node("X", parents=["Z"])), "lists the node itself"),
        (_graph(_node("Z", parents=["X", "X"]), _node("X", parents=["Z"])), "lists a node twice"),
        (_graph(_node("Z", colour="red"), _node("X", parents=["Z"])), "unknown field 'colour'"),
        (_graph(_node("Z", states="four"), _node("X", parents=["Z"])), "states must be an integer"),
        ({"edges": []}, "needs a 'nodes' list"),
    ],
)
def test_validation_errors_name_the_problem(config, message):
    with pytest.raises(GraphError) as error:
        GraphSpec.from_config(config)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_error_names_the_node_and_field():
    config = experiment1_graph_config(4, 4, 32, 1e-3, 0.125)
    config["nodes"][2]["alpha"] = 0.0
    with pytest.raises(GraphError, match=r"graph node 'Z3'\.alpha is 0\.0; use a finite Dirichlet concentration"):
        GraphSpec.from_config(config)
