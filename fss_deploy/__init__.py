"""fss deployment side: export, backends, tiled detection, benchmarks. Imports ``fss_core`` and never ``fss_train``
(tests/test_dependency_rule.py)."""
