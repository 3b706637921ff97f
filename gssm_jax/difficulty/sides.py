"""The two sides of the Experiment 1 pair, defined once for calibration, the sweep, the configs and the report.

Each side holds one alpha small (`SMALL_ALPHA`, composable-llm's value) and calibrates the other so that both
sides have the same difficulty:

* `small_alpha_x`: alpha_X small, alpha_Z calibrated: the latents are easy to *infer* from the tokens;
* `small_alpha_z`: alpha_Z small, alpha_X calibrated: the latents are easy to *predict* over time.
"""

from __future__ import annotations

import dataclasses

from gssm_jax.errors import UserError

SMALL_ALPHA = 1e-3  # composable-llm's small Dirichlet concentration


@dataclasses.dataclass(frozen=True)
class Side:
    """One side of the pair.

    Attributes:
      name: "small_alpha_x" or "small_alpha_z" (run directories, config values, report rows).
      small: the alpha held small ("alpha_X" or "alpha_Z").
      free: the alpha calibrated to the target difficulty (the other one).
      label: a short reading of the side for reports.
    """

    name: str
    small: str
    free: str
    label: str

    def alphas(self, free_alpha: float, small: float = SMALL_ALPHA) -> dict[str, float]:
        """`{"alpha_X", "alpha_Z"}` of this side: the small alpha at `small`, the free one at `free_alpha`."""
        return {self.small: float(small), self.free: float(free_alpha)}


SIDES = (
    Side("small_alpha_x", "alpha_X", "alpha_Z", "small alpha_X (easy to infer)"),
    Side("small_alpha_z", "alpha_Z", "alpha_X", "small alpha_Z (easy to predict)"),
)
SIDE_NAMES = tuple(side.name for side in SIDES)


def get_side(name: str) -> Side:
    """The side called `name`; a ValueError lists the valid names."""
    for side in SIDES:
        if side.name == name:
            return side
    raise UserError(f"side {name!r} is unknown; valid sides are {', '.join(SIDE_NAMES)}")
