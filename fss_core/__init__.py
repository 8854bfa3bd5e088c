"""What training and deployment share, importing neither (DESIGN.md, "The shape").

Today it carries the package data both sides read: ``fss_core/models/`` — the model cards (YAML), the bundled
default model and its sample scene — so that an installed wheel finds them wherever it runs from.
"""
