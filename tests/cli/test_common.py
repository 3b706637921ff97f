"""Command-line errors are one line naming the field (and the close match), with exit status 2."""

import os
import subprocess
import sys

import pytest

from gssm_jax.configs.base import get_config
from gssm_jax.configs.common import parse_arg

REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run_train(*flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gssm_jax.cli.train", *flags], cwd=REPOSITORY, capture_output=True,
                          text=True, timeout=120)


def _error_lines(completed: subprocess.CompletedProcess) -> list[str]:
    return [line for line in completed.stderr.splitlines() if line.strip()]


def test_config_typo_is_one_line_with_the_close_match():
    completed = _run_train("--config=configs/base.py", "--config.modle.width=8", "--workdir=/tmp/unused")
    assert completed.returncode == 2
    lines = _error_lines(completed)
    assert len(lines) == 1, completed.stderr
    assert "modle" in lines[0] and 'Did you mean "model"' in lines[0]


def test_bad_config_argument_is_one_line_listing_the_choices():
    completed = _run_train("--config=configs/base.py:size=huge", "--workdir=/tmp/unused")
    assert completed.returncode == 2
    lines = _error_lines(completed)
    assert len(lines) == 1, completed.stderr
    assert "size='huge'" in lines[0] and "cpu, paper, tiny" in lines[0]


def test_wrong_value_type_is_one_line():
    completed = _run_train("--config=configs/base.py", "--config.model.width=wide", "--workdir=/tmp/unused")
    assert completed.returncode == 2
    lines = _error_lines(completed)
    assert len(lines) == 1, completed.stderr
    assert "config.model.width" in lines[0]


@pytest.mark.parametrize(("arg", "message"), [
    ("alpha_x=0", "must be a Dirichlet concentration > 0"),
    ("alpha_x=small", "expected a float"),
    ("colour=red", "key in size, alpha_x, alpha_z"),
    ("size", "expected key=value"),
])
def test_get_config_rejects_bad_arguments(arg, message):
    with pytest.raises(ValueError, match=message):
        get_config(arg)


def test_get_config_arguments_reach_the_graph():
    config = get_config("alpha_x=0.05,alpha_z=0.002")
    alphas = {node["name"]: node["alpha"] for node in config.graph.nodes}
    assert alphas == {"Z1": 0.002, "Z2": 0.002, "Z3": 0.002, "Z4": 0.002, "X": 0.05}
    assert parse_arg(None, {"size": "cpu"}) == {"size": "cpu"}
