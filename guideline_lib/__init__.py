"""Guideline library: schema, rendering, starter data and the batch builder."""
