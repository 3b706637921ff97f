"""Analysis of finished runs: run records, learning-curve summaries, paired statistics, the Experiment 1 report."""
