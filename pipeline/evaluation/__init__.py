"""Metrics as pure tensor functions, baselines, and report writing."""
