"""Serving an export with onnxruntime, numpy and sentencepiece alone (no TensorFlow, no Keras).

- `serving.search`: greedy, beam and sampling searches in numpy over a step function (also used by the
  Keras side, so this package's `__init__` imports nothing heavy).
- `serving.runtime`: `Runtime(export_dir)` loads and verifies an export; `generate(texts, options)`.
- `serving.cli`: `python -m serving EXPORT_DIR "text" ...`.
- `serving.server`: the HTTP service (`python -m serving.server EXPORT_DIR`, `make serve`).
- `serving.loadtest`: a bounded load test against a local server.
"""
