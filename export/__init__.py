"""Export of a trained run to a SavedModel and ONNX graphs, with validated output parity.

    python -m export RUN [--quantize]        # writes RUN/export/ (see docs/export-contract.md)
    python -m export.validate RUN [--reference-only] [--providers cpu cuda]

Modules that import TensorFlow: `functions`, `onnx_export`, `saved_model`, `reference`, `exporter`.
TensorFlow-free (numpy, onnx, onnxruntime, json, hashlib): `config`, `manifest`, `onnx_check`, `parity`,
`quantize`, and `validate` on its `--reference-only` path. This file imports nothing.
"""
