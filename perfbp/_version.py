"""perfbp's version (layer 0: pure data, importable from every layer)."""

__version__ = "0.1.0"
