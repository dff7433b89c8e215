"""`state_specs()` against what `encode`, `initial_cache` and `decode_step` really return, for every
registered model, without exporting (the exporters and the numpy runtime build everything from the specs).

Each model is built at the `tiny` preset (the smallest of both families) with a 32-piece vocabulary.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import ops

from keras_nlp_week4.models.registry import MODEL_NAMES, build_model

VOCAB, BATCH, SOURCE_LENGTH, MAX_LENGTH = 32, 2, 5, 7
AXES = {"batch": BATCH, "source_batch": BATCH, "source_length": SOURCE_LENGTH, "max_length": MAX_LENGTH}


def concrete(shape) -> tuple[int, ...]:
    """A spec's shape with its symbolic axes resolved to this test's sizes."""
    return tuple(AXES[axis] if isinstance(axis, str) else axis for axis in shape)


def layout(values: dict) -> dict[str, tuple]:
    """{name: (shape, dtype)} of real tensors."""
    return {name: (tuple(ops.shape(value)), keras.backend.standardize_dtype(value.dtype))
            for name, value in values.items()}


def expected(specs, keep) -> dict[str, tuple]:
    return {spec.name: (concrete(spec.shape), spec.dtype) for spec in specs if keep(spec)}


@pytest.fixture(scope="module", params=list(MODEL_NAMES))
def model(request):
    return build_model(request.param, VOCAB, preset="tiny", max_source_length=SOURCE_LENGTH)


def test_the_specs_are_well_formed(model):
    specs = model.state_specs()
    names = [spec.name for spec in specs]
    assert len(set(names)) == len(names), names
    for spec in specs:
        assert spec.source in ("encode", "cache") and spec.description, spec
        # Batch-first: one decoding loop for every family; an entry shared by beams has a row per source.
        assert spec.shape[0] == ("source_batch" if spec.shared_by_beams else "batch"), spec
        assert not (spec.shared_by_beams and spec.updated), spec
        assert all(isinstance(axis, int) and axis > 0 or axis in AXES for axis in spec.shape), spec
    # Only the cache is allocated by the caller for max_length steps.
    assert all("max_length" not in spec.shape for spec in specs if spec.source == "encode")


def test_encode_initial_cache_and_decode_step_match_the_specs(model):
    specs = model.state_specs()
    rng = np.random.default_rng(0)
    encoder_input = rng.integers(4, VOCAB, size=(BATCH, SOURCE_LENGTH)).astype("int32")
    encoder_input[1, 3:] = model.pad_id  # one padded row
    state = model.encode(encoder_input)
    assert layout(state) == expected(specs, lambda s: s.source == "encode")
    cache = model.initial_cache(BATCH, MAX_LENGTH)
    assert layout(cache) == expected(specs, lambda s: s.source == "cache")
    assert all(not np.asarray(value).any() for value in cache.values())  # zeros

    state = {**state, **cache}
    updated = expected(specs, lambda s: s.updated)
    token_ids = np.full((BATCH,), 2, "int32")
    for index in range(2):  # the first step and one fed with the first step's updates
        logits, updates, _ = model.decode_step(token_ids, ops.convert_to_tensor(index, "int32"), state)
        assert tuple(ops.shape(logits)) == (BATCH, VOCAB)
        assert layout(updates) == updated  # exactly the entries marked updated, shapes and dtypes kept
        state = {**state, **updates}
        token_ids = np.asarray(ops.argmax(logits, axis=-1)).astype("int32")


@pytest.mark.parametrize("norm_first", [False, True])
def test_entries_shared_by_beams_serve_every_beam_of_their_sentence(norm_first):
    """A step fed sources x beams rows with the shared entries once per source gives each row what a
    step fed the shared entries repeated per row gives (the layout beam search relies on). The
    Transformer shares its source side; the RNNs share nothing (their attention is per row)."""
    model = build_model("transformer", VOCAB, preset="tiny", max_source_length=SOURCE_LENGTH,
                        norm_first=norm_first)
    shared = {spec.name for spec in model.state_specs() if spec.shared_by_beams}
    assert shared == {"encoder_padding_mask"} | {f"cross_{k}_{i}" for k in ("key", "value") for i in range(2)}
    beams = 3
    rng = np.random.default_rng(1)
    encoder_input = rng.integers(4, VOCAB, size=(BATCH, SOURCE_LENGTH)).astype("int32")
    encoder_input[1, 2:] = model.pad_id
    encoded = {k: np.asarray(v) for k, v in model.encode(encoder_input).items()}
    repeated = {k: np.repeat(v, beams, axis=0) for k, v in encoded.items()}
    kept = {k: v if k in shared else np.repeat(v, beams, axis=0) for k, v in encoded.items()}
    cache = {k: np.asarray(v) for k, v in model.initial_cache(BATCH * beams, MAX_LENGTH).items()}
    token_ids = rng.integers(4, VOCAB, size=(BATCH * beams,)).astype("int32")
    index = ops.convert_to_tensor(0, "int32")
    want = model.decode_step(token_ids, index, {**repeated, **cache})
    got = model.decode_step(token_ids, index, {**kept, **cache})
    np.testing.assert_allclose(np.asarray(got[0]), np.asarray(want[0]), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(got[2]), np.asarray(want[2]), atol=1e-6)
    for name, value in want[1].items():
        np.testing.assert_allclose(np.asarray(got[1][name]), np.asarray(value), atol=1e-5, rtol=1e-5)
