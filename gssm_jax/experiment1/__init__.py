"""Experiment 1: the sides, the sweep and its launchers, the finite-data sweep."""
