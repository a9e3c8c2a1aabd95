"""Training the pml-rt embedder (issue 3): losses, sampling, cached features, the loop, export.

Run as ``python -m training <command>`` (see docs/TRAINING.md). Needs torch (the ``train``
extra); nothing here is imported by ``import pml_rt``.
"""
