"""The documented benchmark commands, in their cheap forms (a file of their own: a second pytest-xdist worker)."""

from test_docs import run_cheap_forms


def test_documented_benchmarks_run_in_their_cheap_form(tmp_path):
    run_cheap_forms(tmp_path, benchmarks=True)
