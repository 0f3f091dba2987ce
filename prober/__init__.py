"""prober: outside-in synthetic endpoint prober."""
__version__ = "0.1.0"
