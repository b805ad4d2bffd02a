"""Benchmarks: commands that print figures, each against a baseline in the same run."""
