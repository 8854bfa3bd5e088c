"""fss deployment side: export, backends, tiled detection, benchmarks.

Imports nothing of ``fss_train`` but the graph (``fss_train.nn``), the checkpoint module and box ops.
"""
