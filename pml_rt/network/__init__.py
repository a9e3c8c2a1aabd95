"""PyTorch definition of the embedder (needs the ``export`` extra: torch).

Nothing here is imported by ``import pml_rt``; the runtime runs the exported ONNX model.
"""
