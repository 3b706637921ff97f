"""Difficulty of a graph setting (compression measures, exact entropy) and the calibration search."""
