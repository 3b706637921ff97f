"""Datasets on disk and the training streams."""
