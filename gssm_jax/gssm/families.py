"""Named graph families: a graph config for every (alpha_X, alpha_Z), used by calibration and Experiment 1.

A family fixes the topology, state counts and vocabulary; the two alphas are its free parameters
(alpha_X on the observed node, alpha_Z on every hidden node). Each family also carries the sequence
length composable-llm used and a *reference setting* whose difficulty is the default calibration target.

* `four_by_four`: composable-llm's Experiment 1 graph, 4 hidden nodes x 4 states, 32 tokens, T=2048;
  reference (alpha_X, alpha_Z) = (1e-3, 0.125), composable-llm's small-alpha_X setup.
* `eight_by_four`: 8 hidden nodes x 4 states, 64 tokens, T=4096; reference (1e-3, 4e-3).
* `chain`: a different topology for the research question's caveat ("does the answer depend on the graph?"):
  a same-step hidden chain Z1 -> Z2 -> Z3 (4 states each), Z1 also reads X[t-1], and X (32 tokens)
  reads only Z2 and Z3; T=2048, reference (1e-3, 0.125).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from gssm_jax.errors import UserError
from gssm_jax.gssm.graph import experiment1_graph_config


@dataclasses.dataclass(frozen=True)
class GraphFamily:
    """A topology whose kernels' concentrations are the free parameters.

    Attributes:
      name: registry name.
      build: `(alpha_x, alpha_z) -> graph config dict` (accepted by `GraphSpec.from_config`).
      length: tokens per sequence composable-llm used for this graph.
      reference: `(alpha_x, alpha_z)` whose difficulty is the default calibration target.
      description: one line for tables and help texts.
    """

    name: str
    build: Callable[[float, float], dict]
    length: int
    reference: tuple[float, float]
    description: str

    def config(self, alpha_x: float, alpha_z: float) -> dict:
        """Graph config with Dirichlet concentration `alpha_x` on X and `alpha_z` on every hidden node."""
        return self.build(alpha_x, alpha_z)

    @property
    def reference_alphas(self) -> dict[str, float]:
        """The reference setting as `{"alpha_X": ..., "alpha_Z": ...}`."""
        return {"alpha_X": self.reference[0], "alpha_Z": self.reference[1]}


def chain_graph_config(alpha_x: float, alpha_z: float, *, hidden_states: int = 4, vocab_size: int = 32) -> dict:
    """Z1[t] ~ K1[Z1[t-1], X[t-1]], Z2[t] ~ K2[Z2[t-1], Z1[t]], Z3[t] ~ K3[Z3[t-1], Z2[t]], X[t] ~ E[Z2[t], Z3[t]]."""
    def hidden(name: str, parents: list[str]) -> dict:
        return {"name": name, "states": hidden_states, "alpha": alpha_z, "parents": parents}

    return {"nodes": [
        hidden("Z1", ["X"]),
        hidden("Z2", ["Z1"]),
        hidden("Z3", ["Z2"]),
        {"name": "X", "states": vocab_size, "alpha": alpha_x, "parents": ["Z2", "Z3"], "observed": True},
    ]}


FAMILIES: dict[str, GraphFamily] = {
    family.name: family
    for family in (
        GraphFamily("four_by_four", lambda ax, az: experiment1_graph_config(4, 4, 32, ax, az), 2048, (1e-3, 0.125),
                    "composable-llm's Experiment 1: 4 hidden x 4 states, X reads all, V=32"),
        GraphFamily("eight_by_four", lambda ax, az: experiment1_graph_config(8, 4, 64, ax, az), 4096, (1e-3, 4e-3),
                    "composable-llm's Experiment 1: 8 hidden x 4 states, X reads all, V=64"),
        GraphFamily("chain", chain_graph_config, 2048, (1e-3, 0.125),
                    "same-step chain Z1->Z2->Z3 (4 states), Z1 reads X[t-1], X reads Z2,Z3, V=32"),
    )
}


def get_family(name: str) -> GraphFamily:
    """The family called `name`; a ValueError lists the valid names."""
    if name not in FAMILIES:
        raise UserError(f"graph family {name!r} is unknown; valid families are {', '.join(FAMILIES)}")
    return FAMILIES[name]
