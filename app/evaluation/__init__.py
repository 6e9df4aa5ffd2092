"""Adapter evaluation: the comparison report (`tonewatch eval`)."""
