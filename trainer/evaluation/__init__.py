"""Evaluation helpers: torchattacks adapter (``external``), test subsets (``subsets``), gradient
checks for the masking flags (``checks``) and the markdown renderer (``markdown``)."""
