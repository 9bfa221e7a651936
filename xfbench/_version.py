"""xfbench's version, in one place (the facade and every result read it from here)."""

__version__ = "0.1.0"
