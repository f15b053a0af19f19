"""Matplotlib figures for studies and notebooks (headless Agg backend)."""
