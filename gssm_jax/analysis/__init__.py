"""Analysis of finished runs: statistics and the Experiment 1 report."""
