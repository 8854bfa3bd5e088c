"""fss training side: what exists only at training time (data, assigners, losses, the training loop,
evaluation). The graph, checkpoints and image/raster I/O it shares with deployment are in ``fss_core``."""
