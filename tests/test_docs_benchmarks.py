"""The benchmark commands in their cheap forms (a file of their own: a second pytest-xdist worker).

The documented ones come from tests/test_docs.py's CHEAP table. The benchmarks the README does not show run here
too: the sweep's worker processes (`benchmarks.sweep`), the GPU check's dry run on this CPU
(`benchmarks/device_check.sh --dry-run`: the sweep's ensembles, the loop benchmark and Experiment 1 at
size=tiny, with its summary), and the anchor of `benchmarks.train_step` where torch and a composable-llm tree
are at hand (`$ANCHOR_DIR`, and `$ANCHOR_PYTHON` or this interpreter with torch).
"""

import importlib.util
import os
import subprocess
import sys

import pytest
from test_docs import REPO, run_cheap_forms

# benchmarks/anchor.py needs only the standard library (it is run by the anchor's torch interpreter too): loaded by
# path, it needs no checkout on sys.path.
_SPEC = importlib.util.spec_from_file_location("anchor", os.path.join(REPO, "benchmarks", "anchor.py"))
anchor = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(anchor)
ENVIRONMENT = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"}


def _run(command: list[str], cwd, **environment) -> str:
    completed = subprocess.run(command, cwd=cwd, env={**ENVIRONMENT, **environment}, capture_output=True, text=True,
                               timeout=900)
    assert completed.returncode == 0, f"{command} failed:\n{completed.stdout[-2000:]}\n{completed.stderr[-3000:]}"
    return completed.stdout


def test_documented_benchmarks_run_in_their_cheap_form(tmp_path):
    run_cheap_forms(tmp_path, benchmarks=True)


def test_sweep_benchmark_times_solo_runs_and_worker_processes(tmp_path):
    output = _run([sys.executable, "-m", "benchmarks.sweep", "--size=tiny", "--members=1", "--calls=1",
                   "--repeats=1", "--workers=2"], tmp_path)
    assert "device: CPU: " in output and "| solo (baseline) | 1 |" in output
    assert "| 2 worker processes, a solo run each | 2 |" in output and "error" not in output


def test_device_check_dry_run_writes_its_summary_under_out(tmp_path):
    out = tmp_path / "out"
    output = _run(["bash", os.path.join(REPO, "benchmarks", "device_check.sh"), "--dry-run"], tmp_path,
                  OUT=str(out), WORK=str(tmp_path / "work"), PYTHON=sys.executable)
    for name in ("summary.md", "sweep.md", "accelerator.md", "report.md", "experiment.log", "device_check.log"):
        assert (out / name).exists(), name
    summary = (out / "summary.md").read_text()
    assert summary in output
    for stage in ("sweep", "accelerator", "experiment"):
        assert f"- {stage}: ok, wall " in summary
    assert "| ensemble | 2 |" in summary and "| four_by_four | 32 | 8 | 1 |" in summary
    assert "## Experiment 1 (size=tiny): wall time" in summary and "**four_by_four**" in summary


def test_anchor_says_why_it_cannot_run():
    assert "torch" in anchor.unavailable("", "")
    assert "--anchor-dir" in anchor.unavailable(sys.executable, str(REPO) + "/no_such_tree")


def test_train_step_times_the_anchor_in_the_same_run(tmp_path):
    python, anchor_dir = anchor.default_python(), os.environ.get("ANCHOR_DIR", "")
    reason = anchor.unavailable(python, anchor_dir)
    if reason:
        pytest.skip(f"the anchor cannot run here: {reason}")
    output = _run([sys.executable, "-m", "benchmarks.train_step", "--shapes=s256_e64", "--steps=1", "--kinds=mingru",
                   f"--anchor-python={python}", f"--anchor-dir={anchor_dir}", "--anchor-compile=off",
                   "--anchor-steps=1", "--anchor-warmup=1"], tmp_path)
    assert "| s256_e64 | composable-llm anchor (torch " in output and "error" not in output
    assert "| s256_e64 | ensemble (2 members" in output
