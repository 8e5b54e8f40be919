"""Prune Studio: prune large language models and record every candidate."""
__version__ = "0.1.0"
