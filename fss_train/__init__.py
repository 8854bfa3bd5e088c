"""fss training side: everything that exists only at training time, plus the inference graph (``nn``)."""

__version__ = "0.1.0"
