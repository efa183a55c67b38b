"""Catalog readers and the dataset writer behind ``tools/convert.py``."""
