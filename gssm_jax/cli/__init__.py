"""Command-line entry points (thin absl mains) and their shared plumbing (`common`)."""
