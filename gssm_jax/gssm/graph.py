"""The structure of a graph-structured sequential model (GSSM), validated once.

A graph has hidden nodes Z_1..Z_n and exactly one observed node X:

* every hidden node reads its own previous value Z[t-1];
* an edge hidden P -> C means C[t] reads P[t] (same step; these edges form a DAG);
* an edge X -> hidden C means C[t] reads X[t-1] (the previous observation);
* X[t] reads its hidden parents at step t and never itself.

Before the first step all previous values are 0. `GraphSpec` is frozen and hashable, so it can be
a static argument of `jax.jit`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gssm_jax.errors import UserError

MODES = ("default", "dead", "slow", "context")
KERNELS = ("fullrank", "product")
MAX_OBSERVED_STATES = 2**31
# Composable-llm's YAML used these field names; we accept them as aliases.
FIELD_ALIASES = {"state_dim": "states", "kernel_type": "kernel"}
NODE_FIELDS = ("name", "states", "alpha", "parents", "mode", "kernel", "observed")


def token_dtype(vocab_size: int) -> np.dtype:
    """The dtype of token arrays (sampled batches, dataset shards): uint8 when X has at most 256 states, else int32."""
    return np.dtype(np.uint8 if vocab_size <= 256 else np.int32)


class GraphError(UserError):
    """A graph config that cannot describe a GSSM. The message names the node, the field and the fix."""


@dataclasses.dataclass(frozen=True)
class NodeSpec:
    """One node of the graph.

    Attributes:
      name: unique node name.
      states: number of values the node takes (>= 2).
      alpha: Dirichlet concentration of the node's kernel rows (> 0, finite).
      parents: names of the nodes this node reads, in the order their axes appear in its kernel.
      mode: one of `MODES`.
      kernel: one of `KERNELS`.
      observed: True for the single observed node X.
    """

    name: str
    states: int
    alpha: float
    parents: tuple[str, ...]
    mode: str = "default"
    kernel: str = "fullrank"
    observed: bool = False


@dataclasses.dataclass(frozen=True)
class GraphSpec:
    """A validated GSSM graph.

    Attributes:
      nodes: every node, in config order.
      observed: name of the observed node X.
      hidden_order: hidden node names in the order they are sampled within a step (topological for
        same-step hidden -> hidden edges, config order among independent nodes).
    """

    nodes: tuple[NodeSpec, ...]
    observed: str
    hidden_order: tuple[str, ...]

    @classmethod
    def from_config(cls, config: Any) -> GraphSpec:
        """Builds a graph from `{"nodes": [{name, states, alpha, parents, ...}, ...]}`.

        Accepts an `ml_collections.ConfigDict` or plain dicts/lists. `state_dim` and `kernel_type`
        are accepted as aliases of `states` and `kernel`. The observed node is the one with
        `observed: True`, or, if no node says so, the node named `X`.

        Raises:
          GraphError: one line naming the node, the field and the fix.
        """
        config = _to_plain(config)
        if not isinstance(config, Mapping) or "nodes" not in config:
            raise GraphError("graph config needs a 'nodes' list: {'nodes': [{'name': 'X', ...}, ...]}")
        raw_nodes = config["nodes"]
        if isinstance(raw_nodes, Mapping):  # {"Z1": {...}, "X": {...}} is accepted too
            raw_nodes = [{"name": name, **fields} for name, fields in raw_nodes.items()]
        if not isinstance(raw_nodes, Sequence) or not raw_nodes:
            raise GraphError("graph.nodes must be a non-empty list of node dicts")
        parsed = [_parse_node(index, raw) for index, raw in enumerate(raw_nodes)]
        names = [node.name for node in parsed]
        for name in names:
            if names.count(name) > 1:
                raise GraphError(f"graph.nodes: duplicate node name {name!r}; give every node a unique name")
        observed = _find_observed(parsed, raw_nodes)
        nodes = tuple(dataclasses.replace(node, observed=node.name == observed) for node in parsed)
        by_name = {node.name: node for node in nodes}
        for node in nodes:
            _check_node(node, by_name)
        hidden_order = _topological_order(nodes)
        return cls(nodes=nodes, observed=observed, hidden_order=hidden_order)

    @property
    def structure(self) -> GraphSpec:
        """The static structure to compile against: this graph with every non-`context` alpha set to 1.

        Compiled code (the sampler, the forward algorithm) reads alpha only to redraw `context` kernels;
        every other alpha only shapes the kernels, which are arguments. Jitted entry points take
        `graph.structure` as their static argument, so graphs that differ only in those alphas (every
        trial of a calibration, every side of Experiment 1) share one compilation.
        """
        return dataclasses.replace(self, nodes=tuple(
            node if node.mode == "context" else dataclasses.replace(node, alpha=1.0) for node in self.nodes))

    # ---- lookups -------------------------------------------------------------------------------
    def node(self, name: str) -> NodeSpec:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(f"no node named {name!r}; nodes are {[n.name for n in self.nodes]}")

    @property
    def observed_node(self) -> NodeSpec:
        return self.node(self.observed)

    @property
    def hidden_nodes(self) -> tuple[NodeSpec, ...]:
        """Hidden nodes in sampling order (`hidden_order`)."""
        return tuple(self.node(name) for name in self.hidden_order)

    @property
    def vocab_size(self) -> int:
        """Number of values of X (the token vocabulary)."""
        return self.observed_node.states

    @property
    def num_latent_states(self) -> int:
        """Size of the joint hidden state, the product of the hidden nodes' state counts."""
        return math.prod(node.states for node in self.hidden_nodes)

    def inputs(self, name: str) -> tuple[str, ...]:
        """Names of a node's kernel inputs, in kernel-axis order.

        Hidden nodes: (own previous value, *parents); X: its parents. Parent X of a hidden node
        means X[t-1]; a hidden parent means its value at the same step.
        """
        node = self.node(name)
        return node.parents if node.observed else (name, *node.parents)

    def input_sizes(self, name: str) -> tuple[int, ...]:
        """Number of values of each kernel input of a node, in `inputs(name)` order."""
        return tuple(self.node(parent).states for parent in self.inputs(name))

    def kernel_shape(self, name: str) -> tuple[int, ...]:
        """Shape `(*input_sizes, states)` of a node's full conditional table."""
        return (*self.input_sizes(name), self.node(name).states)


def _to_plain(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    if isinstance(value, Mapping):
        return {key: _to_plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_to_plain(item) for item in value]
    return value


def _parse_node(index: int, raw: Any) -> NodeSpec:
    where = f"graph.nodes[{index}]"
    if not isinstance(raw, Mapping):
        raise GraphError(f"{where} must be a dict with fields {', '.join(NODE_FIELDS)}")
    fields = {}
    for key, value in raw.items():
        canonical = FIELD_ALIASES.get(key, key)
        if canonical not in NODE_FIELDS:
            raise GraphError(f"{where}: unknown field {key!r}; valid fields are {', '.join(NODE_FIELDS)}")
        if canonical in fields:
            raise GraphError(f"{where}: field {canonical!r} given twice (once as an alias); keep one")
        fields[canonical] = value
    name = fields.get("name")
    if not isinstance(name, str) or not name:
        raise GraphError(f"{where}.name must be a non-empty string")
    where = f"graph node {name!r}"
    for required in ("states", "alpha"):
        if required not in fields:
            raise GraphError(f"{where}: missing field {required!r}")
    states = fields["states"]
    if isinstance(states, bool) or not isinstance(states, int | float) or states != int(states):
        raise GraphError(f"{where}.states must be an integer, got {states!r}")
    alpha = fields["alpha"]
    if isinstance(alpha, bool) or not isinstance(alpha, int | float):
        raise GraphError(f"{where}.alpha must be a positive number, got {alpha!r}")
    parents = fields.get("parents", ())
    if isinstance(parents, str):
        parents = (parents,)
    if not isinstance(parents, Sequence) or not all(isinstance(p, str) for p in parents):
        raise GraphError(f"{where}.parents must be a list of node names, got {parents!r}")
    observed = fields.get("observed", None)
    if observed is not None and not isinstance(observed, bool):
        raise GraphError(f"{where}.observed must be true or false, got {observed!r}")
    return NodeSpec(
        name=name,
        states=int(states),
        alpha=float(alpha),
        parents=tuple(parents),
        mode=fields.get("mode", "default"),
        kernel=fields.get("kernel", "fullrank"),
        observed=bool(observed),
    )


def _find_observed(nodes: list[NodeSpec], raw_nodes: Sequence[Any]) -> str:
    flagged = [node.name for node in nodes if node.observed]
    if len(flagged) > 1:
        raise GraphError(f"graph has {len(flagged)} observed nodes {flagged}; mark exactly one node observed: true")
    if flagged:
        return flagged[0]
    explicitly_hidden = {raw["name"] for raw in raw_nodes if raw.get("observed") is False}
    if any(node.name == "X" for node in nodes) and "X" not in explicitly_hidden:
        return "X"
    raise GraphError("graph has no observed node; name it 'X' or set observed: true on exactly one node")


def _check_node(node: NodeSpec, by_name: dict[str, NodeSpec]) -> None:
    where = f"graph node {node.name!r}"
    if node.states < 2:
        raise GraphError(f"{where}.states is {node.states}; a node needs at least 2 states")
    if node.observed and node.states > MAX_OBSERVED_STATES:
        raise GraphError(
            f"{where}.states is {node.states}; tokens are int32, so the observed node can have at most 2**31 states"
        )
    if not math.isfinite(node.alpha) or node.alpha <= 0:
        raise GraphError(f"{where}.alpha is {node.alpha}; use a finite Dirichlet concentration > 0 (e.g. 1e-3)")
    if node.mode not in MODES:
        raise GraphError(f"{where}.mode is {node.mode!r}; valid modes are {', '.join(MODES)}")
    if node.kernel not in KERNELS:
        raise GraphError(f"{where}.kernel is {node.kernel!r}; valid kernels are {', '.join(KERNELS)}")
    if node.observed and node.mode == "slow":
        raise GraphError(f"{where}.mode is 'slow', which needs a previous value; X has none: use default or dead")
    if node.observed and not node.parents:
        raise GraphError(f"{where}.parents is empty; the observed node must read at least one hidden node")
    for parent in node.parents:
        if parent not in by_name:
            raise GraphError(
                f"{where}.parents names {parent!r}, which is not a node; nodes are {sorted(by_name)}"
            )
        if parent == node.name:
            raise GraphError(
                f"{where}.parents lists the node itself; its own previous value is always an input, remove it"
            )
        if node.observed and by_name[parent].observed:
            raise GraphError(f"{where}.parents lists the observed node; X never depends on itself")
    if len(set(node.parents)) != len(node.parents):
        raise GraphError(f"{where}.parents lists a node twice ({list(node.parents)}); list each parent once")


def _topological_order(nodes: tuple[NodeSpec, ...]) -> tuple[str, ...]:
    """Orders hidden nodes so that same-step hidden parents come first; names the cycle if any."""
    hidden = [node for node in nodes if not node.observed]
    hidden_names = {node.name for node in hidden}
    same_step_parents = {node.name: [p for p in node.parents if p in hidden_names] for node in hidden}
    order: list[str] = []
    state: dict[str, str] = {}  # name -> "visiting" | "done"

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            cycle = path[path.index(name):] + [name]
            raise GraphError(
                "graph has a cycle among hidden nodes at the same step: "
                + " -> ".join(cycle)
                + "; remove one of these parent edges (hidden -> hidden edges are same-step and must form a DAG)"
            )
        state[name] = "visiting"
        for parent in same_step_parents[name]:
            visit(parent, path + [name])
        state[name] = "done"
        order.append(name)

    for node in hidden:
        visit(node.name, [])
    return tuple(order)


def experiment1_graph_config(num_hidden: int, hidden_states: int, vocab_size: int, alpha_x: float,
                             alpha_z: float, *, kernel: str = "fullrank") -> dict:
    """Composable-llm's Experiment 1 graph: Z_i reads (Z_i[t-1], X[t-1]); X reads (Z_1[t], ..., Z_n[t]).

    Returns a plain dict accepted by `GraphSpec.from_config`. Hidden nodes are named Z1..Zn.
    """
    hidden = [
        {"name": f"Z{i + 1}", "states": hidden_states, "alpha": alpha_z, "parents": ["X"], "kernel": kernel}
        for i in range(num_hidden)
    ]
    observed = {
        "name": "X", "states": vocab_size, "alpha": alpha_x,
        "parents": [f"Z{i + 1}" for i in range(num_hidden)], "kernel": kernel, "observed": True,
    }
    return {"nodes": [*hidden, observed]}
