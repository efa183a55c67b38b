"""Catalog readers, the dataset writer and the convert job behind ``tools/convert.py`` and ``launch/convert.py``."""
