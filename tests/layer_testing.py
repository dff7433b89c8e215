"""The layer-test harness every layer's test module uses, and the numeric helpers they share.

`run_layer_test` is modelled on keras-hub's `TestCase.run_layer_test`
(keras_hub/src/tests/test_case.py): from a layer class, its constructor arguments, input data and the
expected output shapes it checks

1. serialization: `get_config` names every constructor argument, is JSON-serializable, and
   `from_config` / `keras.saving.serialize_keras_object` rebuild a layer with the same config that,
   given the same weights, computes the same outputs;
2. a symbolic call (`keras.Input`) and an eager call give the expected shapes, and a functional model
   made from the symbolic call computes what the eager call does, also after a `.keras` save and load;
3. one `fit` step of a tiny model around the layer: the loss is finite and the weights move;
4. a `mixed_float16` pass: the layer and every sub-layer carry the policy, variables stay float32,
   outputs are float16 and finite and, with the float32 layer's weights, close to its outputs; and
   one `fit` step with loss scaling.

Below the harness: the numpy references several layer tests compare with (`layer_norm`,
`masked_softmax`, the sinusoidal encoding, ...) and the small helpers (`rand`, `to_numpy`), once.
"""

from __future__ import annotations

import inspect
import io
import json
import math
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

import h5py
import keras
import numpy as np

# One stream per test process; a test that needs fixed values seeds its own generator.
RNG = np.random.default_rng(0)

MIXED_PRECISION = "mixed_float16"


def rand(*shape: int) -> np.ndarray:
    """Standard-normal float32 array of `shape`."""
    return RNG.normal(size=shape).astype("float32")


def to_numpy(x) -> np.ndarray:
    return keras.ops.convert_to_numpy(x)


# ---------------------------------------------------------------------------------------- harness
def run_layer_test(
    layer_cls: type[keras.layers.Layer],
    init_kwargs: dict[str, Any],
    input_data: dict[str, Any],
    expected_output_shape,
    call_kwargs: dict[str, Any] | None = None,
    expected_num_trainable_weights: int | None = None,
    run_training_check: bool = True,
    run_mixed_precision_check: bool = True,
    mixed_precision_atol: float = 5e-2,
) -> keras.layers.Layer:
    """Runs the checks every layer of the package passes (see the module docstring).

    Args:
        layer_cls: the layer class.
        init_kwargs: constructor arguments (without `dtype`, which the mixed-precision pass sets).
        input_data: the call's tensor arguments by name, e.g. `{"query": q, "value": v}`; numpy arrays
            (they become `keras.Input`s of the same shape and dtype in the symbolic call) or None.
        expected_output_shape: the shape of the output, or a structure of shapes (a tuple of them, an
            `AttentionOutput`) in the order `keras.tree.flatten` gives the outputs; None entries stand for
            outputs the call leaves None.
        call_kwargs: the call's other arguments (flags, python ints), passed as they are.
        expected_num_trainable_weights: checked when given.
        run_training_check: run the `fit` steps (float32 and mixed_float16).
        run_mixed_precision_check: run the `mixed_float16` pass.
        mixed_precision_atol: how far the float16 outputs may be from the float32 ones (absolute and
            relative), given the same weights.

    Returns:
        The float32 layer the checks built, for further assertions.
    """
    call_kwargs = dict(call_kwargs or {})
    expected_shapes = _flat_shapes(expected_output_shape)
    check_serialization(layer_cls, init_kwargs, input_data, call_kwargs)
    layer = check_symbolic_and_eager_calls(layer_cls, init_kwargs, input_data, call_kwargs, expected_shapes)
    if expected_num_trainable_weights is not None:
        assert len(layer.trainable_weights) == expected_num_trainable_weights, [
            w.path for w in layer.trainable_weights]
    if run_training_check:
        check_fit_step(layer_cls(**init_kwargs), input_data, call_kwargs)
    if run_mixed_precision_check:
        check_mixed_precision(layer, layer_cls, init_kwargs, input_data, call_kwargs, mixed_precision_atol,
                              run_training_check)
    return layer


def _is_shape(value) -> bool:
    return isinstance(value, tuple) and not hasattr(value, "_fields") and all(
        d is None or isinstance(d, int) for d in value)


def _flat_shapes(structure) -> list[tuple]:
    """Shapes in `keras.tree.flatten` order; a shape is a plain tuple of ints (None for outputs left None)."""
    if structure is None:
        return []
    if _is_shape(structure):
        return [tuple(structure)]
    if isinstance(structure, dict):
        structure = [structure[key] for key in sorted(structure)]
    return [shape for item in structure for shape in _flat_shapes(item)]


def _call(layer, input_data: dict, call_kwargs: dict):
    return layer(**input_data, **call_kwargs)


def _float_outputs(outputs) -> list:
    return [t for t in keras.tree.flatten(outputs)
            if keras.backend.is_float_dtype(keras.backend.standardize_dtype(t.dtype))]


def _constructor_arguments(layer_cls) -> list[str]:
    """The layer's own constructor arguments (not those of `keras.layers.Layer`, nor `**kwargs`)."""
    base = set(inspect.signature(keras.layers.Layer.__init__).parameters)
    return [p.name for p in inspect.signature(layer_cls.__init__).parameters.values()
            if p.name not in base and p.name != "self"
            and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]


def check_serialization(layer_cls, init_kwargs: dict, input_data: dict, call_kwargs: dict) -> None:
    """`get_config` covers every constructor argument; `from_config` and Keras' (de)serialization give
    the same layer, which computes the same outputs with the same weights."""
    layer = layer_cls(**init_kwargs)
    config = layer.get_config()
    missing = [name for name in _constructor_arguments(layer_cls) if name not in config]
    assert not missing, f"get_config() of {layer_cls.__name__} lacks {missing}"
    for name, value in init_kwargs.items():
        # Plain values come back as they were given (an initializer or activation is serialized).
        if isinstance(value, bool | int | float | type(None)) or isinstance(config.get(name), str):
            assert config[name] == value, (name, config[name], value)
    json.dumps(config)  # a .keras file stores it as JSON

    revived = layer_cls.from_config(config)
    assert type(revived) is layer_cls and revived.get_config() == config
    deserialized = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(deserialized) is layer_cls and deserialized.get_config() == config

    expected = _call(layer, input_data, call_kwargs)  # builds the weights
    _call(revived, input_data, call_kwargs)
    revived.set_weights(layer.get_weights())
    for got, want in zip(keras.tree.flatten(_call(revived, input_data, call_kwargs)),
                         keras.tree.flatten(expected), strict=True):
        np.testing.assert_array_equal(to_numpy(got), to_numpy(want))


def _symbolic_inputs(input_data: dict) -> dict:
    return {name: keras.Input(batch_shape=np.shape(x), dtype=keras.backend.standardize_dtype(x.dtype),
                              name=name) if isinstance(x, np.ndarray) else x
            for name, x in input_data.items()}


def check_symbolic_and_eager_calls(layer_cls, init_kwargs: dict, input_data: dict, call_kwargs: dict,
                                   expected_shapes: list[tuple]) -> keras.layers.Layer:
    """A symbolic and an eager call give the expected shapes; a functional model = the eager call."""
    layer = layer_cls(**init_kwargs)
    inputs = _symbolic_inputs(input_data)
    symbolic = keras.tree.flatten(_call(layer, inputs, call_kwargs))
    assert [tuple(t.shape) for t in symbolic] == expected_shapes, "symbolic call"
    eager = keras.tree.flatten(_call(layer, input_data, call_kwargs))
    assert [tuple(t.shape) for t in eager] == expected_shapes, "eager call"
    for t in symbolic + eager:
        dtype = keras.backend.standardize_dtype(t.dtype)
        if keras.backend.is_float_dtype(dtype):
            assert dtype == "float32", dtype

    tensors = {name: x for name, x in inputs.items() if isinstance(x, keras.KerasTensor)}
    model = keras.Model(tensors, symbolic)
    arrays = {name: input_data[name] for name in tensors}
    for got, want in zip(keras.tree.flatten(model(arrays)), eager, strict=True):
        np.testing.assert_allclose(to_numpy(got), to_numpy(want), atol=1e-6, rtol=1e-6)
    # The same model through a .keras file: the layer is registered and rebuilt from its config.
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "layer.keras"
        model.save(path)
        loaded = keras.saving.load_model(path)
    assert any(type(sublayer) is layer_cls for sublayer in loaded.layers)
    for got, want in zip(keras.tree.flatten(loaded(arrays)), eager, strict=True):
        np.testing.assert_allclose(to_numpy(got), to_numpy(want), atol=1e-6, rtol=1e-6)
    return layer


class FitModel(keras.Model):
    """The layer alone as a model; the loss is the squared distance of its float outputs to fixed
    random targets (an output without a batch axis, such as a positional encoding, is allowed)."""

    def __init__(self, layer, call_kwargs: dict, targets: list[np.ndarray], **kwargs):
        super().__init__(**kwargs)
        self.layer = layer
        self.call_kwargs = call_kwargs
        self.targets = targets

    def call(self, inputs):
        return _float_outputs(_call(self.layer, inputs, self.call_kwargs))

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        losses = [keras.ops.mean(keras.ops.square(keras.ops.cast(p, "float32") - t))
                  for p, t in zip(y_pred, self.targets, strict=True)]
        return keras.ops.sum(keras.ops.stack(losses))


def check_fit_step(layer, input_data: dict, call_kwargs: dict) -> None:
    """One `fit` step of a model around `layer`: finite loss, and its weights change (a layer without
    trainable weights runs the compiled forward pass instead). The model takes the layer's dtype policy,
    so under `mixed_float16` Keras trains with a `LossScaleOptimizer`, as the trainer does."""
    arrays = {name: x for name, x in input_data.items() if isinstance(x, np.ndarray)}
    fixed = {name: x for name, x in input_data.items() if not isinstance(x, np.ndarray)}
    kwargs = {**fixed, **call_kwargs}
    targets = [rand(*t.shape) for t in _float_outputs(_call(layer, input_data, call_kwargs))]
    model = FitModel(layer, kwargs, targets, dtype=layer.dtype_policy)
    optimizer = keras.optimizers.SGD(0.1)
    if layer.dtype_policy.name == "mixed_float16":
        # Keras' default loss scale (2**15) can overflow float16 gradients of random data, and the
        # LossScaleOptimizer then skips that step by design: no weight would change in one step.
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer, initial_scale=2.0**7)
    model.compile(optimizer=optimizer, jit_compile=False)
    batch = len(next(iter(arrays.values())))
    if not layer.trainable_weights:
        # Nothing to train (a positional encoding, a dot-product score): the compiled forward pass.
        outputs = model.predict(arrays, batch_size=batch, verbose=0)
        assert all(np.all(np.isfinite(o)) for o in outputs)
        return
    before = [to_numpy(w).copy() for w in layer.trainable_weights]
    with warnings.catch_warnings():
        # A call from a cross-attention cache leaves the key/value projections out, by design.
        warnings.filterwarnings("ignore", message="Gradients do not exist", category=UserWarning)
        history = model.fit(arrays, batch_size=batch, epochs=1, shuffle=False, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    changed = [not np.array_equal(b, to_numpy(w)) for b, w in zip(before, layer.trainable_weights,
                                                                    strict=True)]
    assert any(changed), "no trainable weight changed in a fit step"


def check_mixed_precision(float32_layer, layer_cls, init_kwargs: dict, input_data: dict,
                          call_kwargs: dict, atol: float, run_training_check: bool = False) -> None:
    """Under `mixed_float16`: every sub-layer computes in float16 with float32 variables, the outputs
    are float16 and finite, and (with the float32 layer's weights) close to the float32 outputs; with
    `run_training_check`, one loss-scaled `fit` step too."""
    layer = layer_cls(**init_kwargs, dtype=MIXED_PRECISION)
    outputs = keras.tree.flatten(_call(layer, input_data, call_kwargs))
    for sublayer in layer._flatten_layers():  # the layer itself and every sub-layer, as keras-hub checks
        assert sublayer.dtype_policy.name == MIXED_PRECISION, (sublayer.name, sublayer.dtype_policy)
    for weight in layer.weights:
        assert keras.backend.standardize_dtype(weight.dtype) == "float32", weight.path
    for t in outputs:
        dtype = keras.backend.standardize_dtype(t.dtype)
        if keras.backend.is_float_dtype(dtype):
            assert dtype == "float16", dtype
            assert np.all(np.isfinite(to_numpy(t))), "non-finite output under mixed_float16"

    layer.set_weights(float32_layer.get_weights())
    expected = keras.tree.flatten(_call(float32_layer, input_data, call_kwargs))
    for got, want in zip(keras.tree.flatten(_call(layer, input_data, call_kwargs)), expected, strict=True):
        np.testing.assert_allclose(to_numpy(got).astype("float32"), to_numpy(want), atol=atol, rtol=atol)
    if run_training_check:
        check_fit_step(layer_cls(**init_kwargs, dtype=MIXED_PRECISION), input_data, call_kwargs)


def saved_variable_groups(layer, *inputs: keras.KerasTensor) -> list[str]:
    """Where a `.keras` file stores the variables of `layer` (called on `inputs` in a functional model):
    the h5 groups below the layer's own, e.g. `self_attention/query_dense`. These are attribute names;
    renaming one moves weights, and files saved before the rename no longer load them."""
    outputs = keras.tree.flatten(layer(*inputs))
    model = keras.Model(list(inputs), outputs)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "layer.keras"
        model.save(path)
        with zipfile.ZipFile(path) as archive:
            weights = h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r")
            names: list[str] = []
            weights.visititems(lambda name, item: names.append(name) if isinstance(item, h5py.Dataset) else None)
    # "layers/<the layer>/<sub-layer path>/vars/<i>": the model holds no other layer with variables.
    return sorted({name.split("/", 2)[2].rsplit("/vars/", 1)[0] for name in names})


# ------------------------------------------------------------------------------ numpy references
def layer_norm(x: np.ndarray, norm: keras.layers.LayerNormalization) -> np.ndarray:
    """`(x - mean) / sqrt(var + eps) * gamma + beta` over the last axis (Ba et al. 2016), with the
    weights of the Keras layer `norm`."""
    gamma, beta = (to_numpy(w) for w in norm.weights)
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return ((x - mean) / np.sqrt(var + norm.epsilon) * gamma + beta).astype("float32")


def randomize_layer_norms(layer) -> None:
    """Gives a Transformer layer's LayerNorms non-trivial gamma/beta, so a numpy reference of the wiring
    checks where each one sits (gamma = 1, beta = 0 would hide a misplaced or missing norm)."""
    for norm in layer.layer_norms():
        d_model = norm.gamma.shape[-1]
        norm.set_weights([rand(d_model) + 1.0, rand(d_model)])


def feed_forward(x: np.ndarray, layer) -> np.ndarray:
    """Vaswani et al. 2017, eq. (2): `max(0, x W_1 + b_1) W_2 + b_2`, with a Transformer layer's weights."""
    w1, b1 = (to_numpy(w) for w in layer.feed_forward_inner.weights)
    w2, b2 = (to_numpy(w) for w in layer.feed_forward_outer.weights)
    return np.maximum(x @ w1 + b1, 0) @ w2 + b2


def masked_softmax(scores, mask=True) -> np.ndarray:
    """Softmax over the unmasked positions of the last axis, 0 elsewhere, all-0 rows where none is left."""
    scores = np.asarray(scores, dtype=np.float64)
    mask = np.broadcast_to(mask, scores.shape)
    row_max = np.max(np.where(mask, scores, -1e300), axis=-1, keepdims=True)
    # exp(-inf) = 0 at masked positions, also in a fully masked row (whose row_max is -1e300).
    exp = np.where(mask, np.exp(np.where(mask, scores, -np.inf) - row_max), 0.0)
    total = exp.sum(axis=-1, keepdims=True)
    return np.divide(exp, total, out=np.zeros_like(exp), where=total > 0)


def sinusoidal_encoding(positions, d_model: int) -> np.ndarray:
    """Vaswani et al. 2017, section 3.5, written out dimension by dimension:
    `PE(pos, 2i) = sin(pos / 10000^(2i / d_model))`, `PE(pos, 2i + 1) = cos(...)`."""
    positions = list(positions)
    pe = np.zeros((len(positions), d_model))
    for row, pos in enumerate(positions):
        for i in range(d_model // 2):
            angle = pos / 10000 ** (2 * i / d_model)
            pe[row, 2 * i] = math.sin(angle)
            pe[row, 2 * i + 1] = math.cos(angle)
    return pe


def assert_masked_weights(weights, mask) -> None:
    """Attention weights are exactly 0 at masked source positions and sum to 1 over the rest.

    `weights` `(batch, src_len)` or `(batch, tgt_len, src_len)`; `mask` bool `(batch, src_len)`."""
    weights = np.asarray(weights, dtype=np.float32)
    key_mask = mask if weights.ndim == 2 else np.broadcast_to(mask[:, None, :], weights.shape)
    assert np.all(weights[~key_mask] == 0.0)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)


# The lecture's worked example: 5 source positions with d=4 encoder hidden states (the table values
# are illustrative) and the attention weights of one decoder step.
LECTURE_HIDDEN_STATES = np.array(
    [
        [0.1, 0.2, 0.3, 0.4],
        [0.5, 0.1, 0.0, 0.2],
        [0.9, 0.3, 0.4, 0.1],
        [0.2, 0.8, 0.6, 0.5],
        [0.4, 0.5, 0.7, 0.9],
    ],
    dtype="float32",
)
LECTURE_WEIGHTS = np.array([0.8, 0.1, 0.03, 0.05, 0.02], dtype="float32")
# context = sum_j a_j h_j, worked out by hand, e.g. first entry
# 0.8*0.1 + 0.1*0.5 + 0.03*0.9 + 0.05*0.2 + 0.02*0.4 = 0.175
LECTURE_CONTEXT = np.array([0.175, 0.229, 0.296, 0.386])


# ------------------------------------------------- score attention (Bahdanau, Luong): shared checks
BATCH, SRC_LEN, TGT_LEN, D_Q, D_K = 2, 5, 3, 6, 4


def make_attention_inputs(seed: int = 0, d_q: int = D_Q, d_k: int = D_K):
    """`(query (batch, tgt_len, d_q), keys (batch, src_len, d_k), mask (batch, src_len))`; the second
    sentence is 3 tokens long."""
    rng = np.random.default_rng(seed)
    query3 = rng.normal(size=(BATCH, TGT_LEN, d_q)).astype("float32")
    keys = rng.normal(size=(BATCH, SRC_LEN, d_k)).astype("float32")
    mask = np.ones((BATCH, SRC_LEN), bool)
    mask[1, 3:] = False
    return query3, keys, mask


def attend(scores: np.ndarray, keys: np.ndarray, key_mask: np.ndarray):
    """Reference: `a = softmax` over the real source tokens; `c = sum_j a_j h_j`.

    scores `(batch, src_len)` (one decoder step) or `(batch, tgt_len, src_len)`."""
    if scores.ndim == 2:
        weights = masked_softmax(scores, key_mask)
        return np.einsum("bs,bsd->bd", weights, keys), weights
    weights = masked_softmax(scores, key_mask[:, None, :])  # (batch, tgt_len, src_len)
    return weights @ keys, weights


def check_against_reference(layer, np_scores_fn, query3, keys, mask) -> None:
    """Rank-3 and rank-2 (first step) queries, with a padding mask, against numpy."""
    for query in (query3, query3[:, 0]):
        context, weights = layer(query, keys, mask=mask)
        ref_context, ref_weights = attend(np_scores_fn(query, keys), keys, mask)
        assert context.shape == ref_context.shape
        assert weights.shape == ref_weights.shape
        np.testing.assert_allclose(np.asarray(weights), ref_weights, atol=1e-5)
        np.testing.assert_allclose(np.asarray(context), ref_context, atol=1e-5)
        assert_masked_weights(weights, mask)


def check_processed_keys(layer, query3, keys, mask):
    """A step-by-step decoder loop with precomputed keys equals the all-steps call."""
    full_context, full_weights = layer(query3, keys, mask=mask)
    processed = layer.process_keys(keys)
    for step in range(query3.shape[1]):
        context, weights = layer(query3[:, step], keys, mask=mask, processed_keys=processed)
        np.testing.assert_allclose(np.asarray(context), np.asarray(full_context)[:, step], atol=1e-6)
        np.testing.assert_allclose(np.asarray(weights), np.asarray(full_weights)[:, step], atol=1e-6)
    return processed


def run_score_attention_test(layer_cls, init_kwargs: dict, d_q: int = D_Q, d_k: int = D_K) -> None:
    """`run_layer_test` for all decoder steps at once; the symbolic and eager calls for one step; then
    symbolic calls with an unknown number of steps and with one step (the RNN decoders' two uses)."""
    query3, keys, mask = make_attention_inputs(d_q=d_q, d_k=d_k)
    run_layer_test(layer_cls, init_kwargs, {"query": query3, "keys": keys, "mask": mask},
                   ((BATCH, TGT_LEN, d_k), (BATCH, TGT_LEN, SRC_LEN)))
    check_symbolic_and_eager_calls(layer_cls, init_kwargs, {"query": query3[:, 0], "keys": keys, "mask": mask},
                                   {}, [(BATCH, d_k), (BATCH, SRC_LEN)])
    layer = layer_cls(**init_kwargs)
    for query_shape in ((None, d_q), (d_q,)):
        context, weights = layer(keras.Input(query_shape), keras.Input((SRC_LEN, d_k)),
                                 mask=keras.Input((SRC_LEN,), dtype="bool"))
        assert tuple(context.shape) == (None, *query_shape[:-1], d_k)
        assert tuple(weights.shape) == (None, *query_shape[:-1], SRC_LEN)
