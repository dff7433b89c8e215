"""`make export TARGET=ctranslate2`: a trained Transformer run as a CTranslate2 model, validated.

CTranslate2 (https://github.com/OpenNMT/CTranslate2) is the inference engine people pick for Transformer
translation on CPUs. This module writes our weights into its `TransformerSpec` directly (no intermediate
framework checkpoint), the way its own converters do for OpenNMT-py or Fairseq:

    ours (Keras)                                   CTranslate2 spec
    source/target_embedding  E                     encoder.embeddings[0] / decoder.embeddings (weight E),
                                                   scale_embeddings: E[token] * sqrt(d_model)
    SinusoidalPositionalEncoding (sin even, cos    position_encodings.encodings: the table itself, taken
        odd dimensions; Vaswani et al. 3.5)        from our layer (CT2's built-in table puts all the sins
                                                   first, so it cannot be left to default)
    self_attention query/key/value (d, h, d_k)     self_attention.linear[0]: one fused (3 d, d) projection
    cross_attention query, key/value               attention.linear[0] (query), linear[1] (fused key/value)
    attention_output (h, d_k, d)                   linear[-1] (d, d)
    <sublayer>_layer_norm                          <sublayer>.layer_norm (post-norm: after the residual;
                                                   pre-norm: before the sub-layer, plus the final norms)
    feed_forward_inner / _outer                    ffn.linear_0 / ffn.linear_1 (ReLU or GELU)
    output projection (tied: E^T)                  decoder.projection

Keras kernels are `(in, out)`; CTranslate2 linear weights are `(out, in)`, hence the transposes.
The vocabulary is the sentencepiece model's pieces in id order, so ids agree on both sides; the special
pieces (`<pad>`, `<unk>`, `<s>`, `</s>` at ids 0-3) are CTranslate2's defaults, and the source gets its
EOS appended by CTranslate2 itself (`add_source_eos`), as our pipeline appends it.

Nothing in the Transformer is outside what CTranslate2 expresses; the RNN families (LSTM/GRU encoders and
decoders with Bahdanau/Luong attention) are, and get a one-line error.

Validation (`validate_ctranslate2`) runs like every other export's: greedy tokens on every test sequence
of `export/reference.npz` must be identical to the Keras model's (100 %), and beam-4 outputs are compared
with our onnxruntime runtime's and reported (agreement, and BLEU of each; the two beam searches normalise
by length differently: CTranslate2 divides by length, ours uses GNMT's penalty).

`ctranslate2` is an optional extra (`pip install -e ".[ctranslate2]"`), never needed to train or to serve.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from keras_nlp_week4.errors import UserError

__all__ = ["CT2_DIR", "check_convertible", "convert_run", "ctranslate2_translator", "require_ctranslate2", "transformer_spec",
           "validate_ctranslate2", "write_ctranslate2"]

CT2_DIR = "ctranslate2"
REPORT = "ctranslate2_parity.json"
# Keras activation name -> CTranslate2 activation (ctranslate2.specs.common_spec.Activation).
_ACTIVATIONS = {"relu": "RELU", "gelu": "GELU", "silu": "SWISH", "swish": "SWISH", "tanh": "Tanh"}


def require_ctranslate2():
    """Imports `ctranslate2`, or says in one line how to install it."""
    try:
        import ctranslate2
    except ImportError:
        raise UserError("the ctranslate2 target needs the ctranslate2 package: "
                        "pip install -e \".[ctranslate2]\" (or pip install ctranslate2)") from None
    return ctranslate2


# ---------------------------------------------------------------------------------------------- weights
def _linear(spec, kernel: np.ndarray, bias: np.ndarray | None) -> None:
    """A Keras `(in, ..., out)`-shaped kernel as CTranslate2's `(out, in)` weight."""
    spec.weight = np.ascontiguousarray(kernel.T, dtype=np.float32)
    if bias is not None:
        spec.bias = np.asarray(bias, dtype=np.float32).reshape(-1)


def _matrix(layer, input_axes: int = 1) -> tuple[np.ndarray, np.ndarray | None]:
    """A `Dense`/`EinsumDense` projection as a 2-D `(in, out)` kernel and a flat bias: the first
    `input_axes` kernel axes are the input (2 for the attention output's `(heads, d_k, d)`)."""
    kernel = np.asarray(layer.kernel)
    kernel = kernel.reshape(int(np.prod(kernel.shape[:input_axes])), -1)
    return kernel, None if layer.bias is None else np.asarray(layer.bias).reshape(-1)


def _fused(spec, layers: Sequence, input_axes: int = 1) -> None:
    """Projections of the same input as one: kernels stacked along the output axis (CTranslate2 computes
    query, key and value with one matmul)."""
    kernels, biases = zip(*(_matrix(layer, input_axes) for layer in layers), strict=True)
    _linear(spec, np.concatenate(kernels, axis=1),
            None if any(b is None for b in biases) else np.concatenate(biases))


def _layer_norm(spec, layer) -> None:
    spec.gamma = np.asarray(layer.gamma, dtype=np.float32)
    spec.beta = np.asarray(layer.beta, dtype=np.float32)


def _attention(spec, attention, layer_norm, self_attention: bool) -> None:
    if self_attention:
        _fused(spec.linear[0], [attention.query_dense, attention.key_dense, attention.value_dense])
    else:
        _fused(spec.linear[0], [attention.query_dense])
        _fused(spec.linear[1], [attention.key_dense, attention.value_dense])
    _fused(spec.linear[-1], [attention.output_dense], input_axes=2)  # (heads, d_k, d) -> (d, d)
    _layer_norm(spec.layer_norm, layer_norm)


def _feed_forward(spec, layer) -> None:
    _fused(spec.linear_0, [layer.feed_forward_inner])
    _fused(spec.linear_1, [layer.feed_forward_outer])
    _layer_norm(spec.layer_norm, layer.feed_forward_layer_norm)


def _activation(model):
    from ctranslate2.specs import common_spec

    layers = [*model.encoder_layers, *model.decoder_layers]
    names = {_keras_name(layer.activation) for layer in layers}
    if len(names) != 1 or next(iter(names)) not in _ACTIVATIONS:
        raise UserError(f"CTranslate2 has no activation for this model's feed-forward {sorted(names)}; "
                        f"it supports {', '.join(sorted(_ACTIVATIONS))}")
    return common_spec.Activation[_ACTIVATIONS[names.pop()]]


def _keras_name(function) -> str:
    import keras

    return keras.activations.serialize(function) if not isinstance(function, str) else function


def _epsilon(model) -> float:
    epsilons = {float(layer.epsilon) for layer in _layer_norms(model)}
    if len(epsilons) != 1:
        raise UserError(f"CTranslate2 takes one LayerNorm epsilon per model; this one has {sorted(epsilons)}")
    return epsilons.pop()


def _layer_norms(model) -> list:
    norms = []
    for layer in [*model.encoder_layers, *model.decoder_layers]:
        norms += layer.layer_norms()
    return norms + [n for n in (model.encoder_norm, model.decoder_norm) if n is not None]


def _position_table(embedding, length: int) -> np.ndarray:
    """Our positional encoding for positions 0..length-1, computed by the layer itself."""
    zeros = np.zeros((1, length, embedding.d_model), dtype=np.float32)
    return np.asarray(embedding.position_encoding(zeros))[0].astype(np.float32)  # (length, d_model)


def transformer_spec(model, pieces: Sequence[str], special_pieces: dict[str, str], max_length: int):
    """Our Keras `Transformer` as a `ctranslate2.specs.TransformerSpec` (weights copied, not shared).

    Args:
        model: a `keras_nlp_week4.models.Transformer` (built).
        pieces: the vocabulary, one string per id.
        special_pieces: `{"unk", "bos", "eos"}` -> piece.
        max_length: positions to tabulate (the longer of the model's source and target maxima).
    """
    from ctranslate2.specs import TransformerSpec

    from keras_nlp_week4.models.transformer import Transformer

    if not isinstance(model, Transformer):
        raise UserError(f"CTranslate2 converts Transformer runs only; this run is a {type(model).__name__} "
                        f"(RNN encoder-decoders have no CTranslate2 model type); export it with "
                        f"`make export` (ONNX) instead")
    if not model.source_embedding.scale_by_sqrt_d_model or not model.target_embedding.scale_by_sqrt_d_model:
        raise UserError("CTranslate2 scales embeddings by sqrt(d_model) in every model; this one does not")
    spec = TransformerSpec.from_config((model.num_encoder_layers, model.num_decoder_layers), model.num_heads,
                                       pre_norm=model.norm_first, activation=_activation(model))
    for stack, embedding in ((spec.encoder, model.source_embedding), (spec.decoder, model.target_embedding)):
        weight = np.asarray(embedding.embeddings, dtype=np.float32)
        (stack.embeddings[0] if isinstance(stack.embeddings, list) else stack.embeddings).weight = weight
        stack.scale_embeddings = True
        stack.position_encodings.encodings = _position_table(embedding, max_length)
    for layer_spec, layer in zip(spec.encoder.layer, model.encoder_layers, strict=True):
        _attention(layer_spec.self_attention, layer.self_attention, layer.self_attention_layer_norm, True)
        _feed_forward(layer_spec.ffn, layer)
    for layer_spec, layer in zip(spec.decoder.layer, model.decoder_layers, strict=True):
        _attention(layer_spec.self_attention, layer.self_attention, layer.self_attention_layer_norm, True)
        _attention(layer_spec.attention, layer.cross_attention, layer.cross_attention_layer_norm, False)
        _feed_forward(layer_spec.ffn, layer)
    if model.norm_first:
        _layer_norm(spec.encoder.layer_norm, model.encoder_norm)
        _layer_norm(spec.decoder.layer_norm, model.decoder_norm)
    if model.output_projection is None:  # tied: logits = x E^T
        spec.decoder.projection.weight = np.asarray(model.target_embedding.embeddings, dtype=np.float32)
    else:
        _fused(spec.decoder.projection, [model.output_projection])
    spec.config.layer_norm_epsilon = _epsilon(model)
    spec.config.unk_token = special_pieces["unk"]
    spec.config.bos_token = special_pieces["bos"]
    spec.config.eos_token = special_pieces["eos"]
    spec.config.decoder_start_token = special_pieces["bos"]
    spec.config.add_source_eos = True
    spec.register_source_vocabulary(list(pieces))
    spec.register_target_vocabulary(list(pieces))
    return spec


def _pieces(tokenizer_model: Path, vocab_size: int | None = None) -> list[str]:
    """The sentencepiece pieces in id order, padded with placeholders up to `vocab_size` when the model's
    vocabulary is larger than its tokenizer's (a benchmark's random-weight stand-in)."""
    import sentencepiece as spm

    processor = spm.SentencePieceProcessor(model_file=str(tokenizer_model))
    pieces = [processor.id_to_piece(i) for i in range(processor.get_piece_size())]
    if len(set(pieces)) != len(pieces):
        raise UserError(f"{tokenizer_model} has repeated pieces; CTranslate2 needs one string per id")
    return pieces + [f"<unused_{i}>" for i in range(len(pieces), vocab_size or 0)]


def convert_run(run, destination: Path, max_length: int | None = None) -> Path:
    """Writes `run` (a loaded `keras_nlp_week4.runs.Run`) as a CTranslate2 model directory at `destination`:
    `model.bin`, the shared vocabulary, `config.json`, and `tokenizer.model` beside them. Written to a
    folder next to it and renamed into place. `max_length`: positions to tabulate (default: the longer
    of the run's source and target maxima)."""
    require_ctranslate2()
    from keras_nlp_week4.data.tokenizer import BOS_ID, EOS_ID, UNK_ID

    pieces = _pieces(Path(run.tokenizer.model_path), run.config.vocab_size)
    max_length = max_length or max(run.config.max_source_length, run.config.max_target_length)
    spec = transformer_spec(run.model, pieces, {"unk": pieces[UNK_ID], "bos": pieces[BOS_ID],
                                                "eos": pieces[EOS_ID]}, max_length)
    spec.validate()
    spec.optimize()  # float32 on disk: compute types (int8, ...) are chosen when the model is loaded
    destination = Path(destination)
    staging = destination.with_name(f".{destination.name}-staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    spec.save(str(staging))
    shutil.copyfile(run.tokenizer.model_path, staging / "tokenizer.model")
    if destination.exists():
        shutil.rmtree(destination)
    staging.rename(destination)
    return destination


# ------------------------------------------------------------------------------------------- inference
def ctranslate2_translator(model_dir: Path, threads: int = 1, compute_type: str = "float32",
                           device: str = "cpu"):
    """A `ctranslate2.Translator` on one batch-level worker with `threads` intra-op threads."""
    ctranslate2 = require_ctranslate2()
    return ctranslate2.Translator(str(model_dir), device=device, compute_type=compute_type,
                                  inter_threads=1, intra_threads=threads)


def translate_ids(translator, pieces: Sequence[str], sources: Sequence[Sequence[int]], max_length: int,
                  beam_size: int = 1, max_batch_size: int = 64, **options) -> list[list[int]]:
    """Source ids (no EOS; CTranslate2 appends it) -> generated ids before the EOS, without PAD and BOS
    (what `strip_special` keeps of ours).

    `max_length` counts generated tokens EOS included, as our decoders do; CTranslate2's minimum length
    of 1 is lifted so that an immediate EOS is allowed, as in ours."""
    index = {piece: i for i, piece in enumerate(pieces)}
    batch = [[pieces[i] for i in ids] for ids in sources]
    results = translator.translate_batch(batch, beam_size=beam_size, max_decoding_length=max_length,
                                         min_decoding_length=0, max_batch_size=max_batch_size, **options)
    from keras_nlp_week4.data.tokenizer import BOS_ID, PAD_ID

    return [[index[token] for token in result.hypotheses[0] if index[token] not in (PAD_ID, BOS_ID)]
            for result in results]


def validate_ctranslate2(model_dir: Path, export_dir: Path, threads: int = 0, beam_size: int = 4,
                         verbose: bool = True) -> dict:
    """Greedy tokens of the CTranslate2 model against the Keras reference on the whole test split (must be
    identical), and its beam search against our runtime's (reported). Writes `model_dir/<REPORT>`."""
    from export.parity import ReferenceData, quality
    from serving.options import DecodingOptions
    from serving.runtime import Runtime

    reference = ReferenceData(Path(export_dir) / "reference.npz")
    from serving.export_config import ExportConfig

    config = ExportConfig.read(Path(export_dir))
    max_target = config.max_target_length
    pieces = _pieces(Path(model_dir) / "tokenizer.model")
    translator = ctranslate2_translator(model_dir, threads=threads)
    runtime = Runtime(export_dir, intra_op_threads=threads)
    strip = runtime.tokenizer.output_ids  # ids before EOS, without PAD and BOS

    started = time.perf_counter()
    keras_greedy, ct2_greedy, ct2_beam, ours_beam = [], [], [], []
    for encoder_input, tokens in reference.greedy_chunks():
        sources = [strip(row) for row in encoder_input]  # CTranslate2 appends the EOS itself
        keras_greedy += [strip(row) for row in tokens]
        ct2_greedy += translate_ids(translator, pieces, sources, max_target)
        ct2_beam += translate_ids(translator, pieces, sources, max_target, beam_size=beam_size)
        beam = runtime.generate_ids(encoder_input, DecodingOptions(method="beam", beam_size=beam_size,
                                                                   max_new_tokens=max_target)).tokens
        ours_beam += [strip(row) for row in beam]
    seconds = time.perf_counter() - started

    mismatches = [i for i, (a, b) in enumerate(zip(keras_greedy, ct2_greedy, strict=True)) if a != b]
    def decode(row: np.ndarray) -> str:
        return runtime.tokenizer.decode(strip(row))

    exact = config.exact_match
    report = {
        "model_dir": str(model_dir),
        "ctranslate2_version": require_ctranslate2().__version__,
        "test_sequences": len(keras_greedy),
        "greedy": {"identical": len(keras_greedy) - len(mismatches), "of": len(keras_greedy),
                   "first_mismatches": [
                       {"row": i, "keras": keras_greedy[i], "ctranslate2": ct2_greedy[i],
                        "source": reference.sources[i]} for i in mismatches[:5]],
                   "quality_keras": quality(reference, _padded(keras_greedy), decode, exact),
                   "quality_ctranslate2": quality(reference, _padded(ct2_greedy), decode, exact)},
        f"beam{beam_size}": {
            "identical_to_ours": sum(a == b for a, b in zip(ct2_beam, ours_beam, strict=True)),
            "of": len(ct2_beam),
            "note": "CTranslate2 length_penalty=1 (log-prob / length); ours GNMT alpha=0.6: rankings of "
                    "finished hypotheses can differ",
            "quality_ours": quality(reference, _padded(ours_beam), decode, exact),
            "quality_ctranslate2": quality(reference, _padded(ct2_beam), decode, exact)},
        "seconds": round(seconds, 1),
    }
    report["passed"] = not mismatches
    (Path(model_dir) / REPORT).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if verbose:
        greedy, beam = report["greedy"], report[f"beam{beam_size}"]
        print(f"ctranslate2 greedy: {greedy['identical']}/{greedy['of']} sequences identical to Keras "
              f"({greedy['quality_ctranslate2']['metric']} {_fmt(greedy['quality_ctranslate2'])} vs "
              f"{_fmt(greedy['quality_keras'])}); beam {beam_size}: {beam['identical_to_ours']}/{beam['of']} "
              f"identical to ours ({_fmt(beam['quality_ctranslate2'])} vs {_fmt(beam['quality_ours'])})")
    return report


def _fmt(quality: dict) -> str:
    value = quality.get("value")
    return "n/a" if value is None else f"{value:.4g}"


def _padded(rows: list[list[int]]) -> np.ndarray:
    """Ragged ids as a PAD-filled matrix (what `export.parity.quality` decodes row by row)."""
    from keras_nlp_week4.data.tokenizer import EOS_ID, PAD_ID

    width = max((len(r) for r in rows), default=0) + 1
    out = np.full((len(rows), width), PAD_ID, np.int32)
    for i, row in enumerate(rows):
        out[i, : len(row) + 1] = [*row, EOS_ID]
    return out


def check_convertible(run_dir: Path) -> None:
    """Fails in one line, before any export work, when the run cannot become a CTranslate2 model."""
    from keras_nlp_week4.runs import RunConfig

    config = RunConfig.read(Path(run_dir))
    if config.model_class != "Transformer":
        raise UserError(f"CTranslate2 converts Transformer runs only; {run_dir} is a {config.model} "
                        f"({config.model_class}: RNN encoder-decoders have no CTranslate2 model type); "
                        f"use `make export RUN={run_dir}` (ONNX) for it")
    require_ctranslate2()


def write_ctranslate2(run_dir: Path, threads: int = 0, verbose: bool = True) -> Path:
    """`RUN/ctranslate2/` from a trained Transformer run with a validated `RUN/export/`; raises
    `UserError` when the greedy tokens differ anywhere on the test split (the directory is then kept as
    `RUN/ctranslate2.failed/`)."""
    from keras_nlp_week4.runs import load_run

    run_dir = Path(run_dir)
    export_dir = run_dir / "export"
    if not (export_dir / "reference.npz").is_file():
        raise UserError(f"{export_dir} has no reference.npz; run `python -m export {run_dir}` first")
    run = load_run(run_dir, compile=False)
    destination = convert_run(run, run_dir / CT2_DIR)
    report = validate_ctranslate2(destination, export_dir, threads=threads, verbose=verbose)
    if not report["passed"]:
        failed = run_dir / f"{CT2_DIR}.failed"
        shutil.rmtree(failed, ignore_errors=True)
        destination.rename(failed)
        greedy = report["greedy"]
        raise UserError(f"the CTranslate2 model's greedy tokens differ from Keras on "
                        f"{greedy['of'] - greedy['identical']} of {greedy['of']} test sequences "
                        f"(see {failed / REPORT})")
    return destination
