"""The notebooks: committed without outputs, and they run end to end with small parameters (nbclient)."""

import os
import re
import sys

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

import gssm_jax as gj

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = ("quickstart.ipynb", "experiment1.ipynb")


def read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(os.path.join(REPO, "notebooks", name), as_version=4)


def execute(name: str, overrides: str) -> nbformat.NotebookNode:
    """Runs the notebook from notebooks/ (as Jupyter does) with `overrides` appended to its `parameters` cell."""
    notebook = read(name)
    cell = next(cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", []))
    cell.source += "\n# test overrides\n" + overrides
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": os.path.join(REPO, "notebooks")}}).execute()
    return notebook


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_stripped_and_parameterised(name):
    notebook = read(name)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code), "strip the outputs"
    assert sum("parameters" in cell.metadata.get("tags", []) for cell in code) == 1


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_installs_from_a_real_checkout_and_uses_the_public_api_only(name):
    code = [cell.source for cell in read(name).cells if cell.cell_type == "code"]
    install = code[0]
    assert 'if "google.colab" in sys.modules:' in install and '%pip install -q -e "{CHECKOUT}[report]"' in install
    assert "http" not in install and "raise FileNotFoundError" in install  # no placeholder URL: a clear message
    source = "\n".join(code)
    assert "import gssm_jax as gj" in source
    assert "from gssm_jax" not in source and "import gssm_jax." not in source, "gj.* only (gssm_jax/__init__.py)"
    used = set(re.findall(r"\bgj\.(\w+)", source))
    assert used <= set(gj.__all__), used - set(gj.__all__)
    for figure in source.split("plt.show()")[:-1]:  # every figure has a legend
        assert "legend(" in figure, figure[-300:]


def test_experiment1_notebook_on_a_missing_workdir_says_what_to_run(tmp_path):
    with pytest.raises(CellExecutionError, match="holds no Experiment 1 runs") as raised:
        execute("experiment1.ipynb", f"workdir = {str(tmp_path / 'nosuch')!r}")
    assert "gssm-experiment1 --config=experiment1:size=tiny" in str(raised.value)


def test_experiment1_notebook_reproduces_the_report_on_a_fake_workdir(tmp_path):
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "experiment1"))
    from test_report import make_fake_workdir

    workdir = make_fake_workdir(str(tmp_path))
    notebook = execute("experiment1.ipynb", f"workdir = {workdir!r}")
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    text = "".join(str(output.get("data", {}).get("text/markdown", "")) + str(output.get("text", ""))
                   for output in outputs)
    assert "| four_by_four | entropy | transformer | tiny | 3 | 0.1100 [0.0670, 0.1530]" in text
    assert ("**eight_by_four** (matched by entropy; transformer `tiny`; 3 seed pairs): **Ends lower: neither: the 95% "
            "CI of the paired difference includes 0**") in text
    assert "18 finished runs" in text
    assert sum("image/png" in output.get("data", {}) for output in outputs) >= 4  # 3 report plots + every run's curve


@pytest.mark.slow
def test_quickstart_runs_with_small_sizes():
    notebook = execute("quickstart.ipynb", "batch_size = 16\nlength = 32\nnum_train_steps = 10\ntrain_length = 32")
    outputs = "".join(str(output.get("text", "")) for cell in notebook.cells if cell.cell_type == "code"
                      for output in cell.outputs)
    assert "entropy rate" in outputs and "excess loss" in outputs
