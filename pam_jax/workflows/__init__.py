"""Workflows over the whole pipeline: the demo, preference collection, the study."""
