"""Helpers shared by the test tiers: tiny adapters, engine drivers, real server processes."""
