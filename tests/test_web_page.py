"""The try-it page running the export itself: `serving/static/web_backend.js` (onnxruntime-web, WASM, and
`sentencepiece.js`) in a real headless Chromium, on the files `python -m serving.page_server` serves,
translating the dates and the Multi30k-shaped exports' test lines exactly as `python -m serving` does:
texts, scores, pieces and attention, greedy and beam; then the page itself, typed into and drawn.

Skips, saying why, without onnxruntime-web (`make js`), chromium or playwright.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from browser import chromium_page, page_server

from serving.options import DecodingOptions
from serving.page_server import ORT_WEB_DIST
from serving.runtime import Runtime

pytestmark = pytest.mark.skipif(not ORT_WEB_DIST.is_dir(),
                                reason="js/node_modules lacks onnxruntime-web: run make js")

# (method, beam_size, length_penalty, max_new_tokens, min_new_tokens); None: the defaults. A dates output
# is 10 pieces and EOS: min_new_tokens 11 makes it longer.
SETTINGS = [("greedy", None, None, None, None), ("beam", 4, 0.6, None, None), ("beam", 2, 1.0, 5, None),
            ("greedy", None, None, None, 11), ("beam", 3, 0.6, None, 11)]
# In the page: the back end page.js picks on the page server, called on each text and setting.
RUN_BACKEND = """async ({ texts, settings }) => {
  const ort = await import("/ort/ort.wasm.min.mjs");
  ort.env.wasm.wasmPaths = "/ort/";
  ort.env.wasm.numThreads = 1;
  const { WebBackend } = await import("/static/web_backend.js");
  const backend = await WebBackend.load(ort, new URL("export/", location.href).href);
  const results = [];
  for (const [method, beam_size, length_penalty, max_new_tokens, min_new_tokens] of settings) {
    const outputs = [];
    for (const inputs of texts) {
      const body = { inputs, method, return_attention: true };
      if (beam_size !== null) Object.assign(body, { beam_size, length_penalty });
      if (max_new_tokens !== null) body.max_new_tokens = max_new_tokens;
      if (min_new_tokens !== null) body.min_new_tokens = min_new_tokens;
      for await (const { name, data } of backend.generate(body)) if (name === "done") outputs.push(data);
    }
    results.push(outputs);
  }
  return { facts: await backend.describe(), results };
}"""


# The Multi30k-shaped export costs a second export (about a minute on 2 cores): in the large tier, which
# `.ci/run` runs after `make test`; its BPE tokenization is in `make test` through test_js_tokenizer.py.
@pytest.fixture(params=["dates", pytest.param("multi30k", marks=pytest.mark.large)])
def export_and_texts(request, tiny_export, tiny_run) -> tuple[Path, list[str]]:
    """The dates export (character tokenizer) or the Multi30k-shaped one (BPE), with test lines."""
    if request.param == "dates":
        export, lines = tiny_export, (tiny_run / "test.tsv").read_text(encoding="utf-8").splitlines()[:30]
    else:
        export = request.getfixturevalue("multi30k_export")
        lines = (export.parent / "test.tsv").read_text(encoding="utf-8").splitlines()
    return export, [line.split("\t")[0] for line in lines]


def _options(method, beam_size, length_penalty, max_new_tokens, min_new_tokens) -> DecodingOptions:
    given = {"beam_size": beam_size, "length_penalty": length_penalty, "max_new_tokens": max_new_tokens,
             "min_new_tokens": min_new_tokens}
    return DecodingOptions(method=method, **{k: v for k, v in given.items() if v is not None})


def test_the_page_back_end_translates_as_the_python_runtime(export_and_texts):
    export, texts = export_and_texts
    runtime = Runtime(export, intra_op_threads=1)
    with page_server(export) as url, chromium_page() as page:
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(url + "/?backend=none")  # the page's origin, without starting the page's own back end
        got = page.evaluate(RUN_BACKEND, {"texts": texts, "settings": SETTINGS})
        assert not errors
    assert got["facts"]["has_attention"] and "onnxruntime-web" in got["facts"]["providers"][0]
    for setting, outputs in zip(SETTINGS, got["results"], strict=True):
        expected = [g.to_json(tokens=True, attention=True)
                    for g in runtime.generate(texts, _options(*setting), return_attention=True)]
        assert [o["text"] for o in outputs] == [e["text"] for e in expected], setting
        for o, e in zip(outputs, expected, strict=True):
            assert (o["tokens"], o["token_ids"], o["source_tokens"]) == (e["tokens"], e["token_ids"],
                                                                        e["source_tokens"]), setting
            assert o["score"] == pytest.approx(e["score"], rel=1e-6, abs=1e-5)  # float32 sums, WASM vs native
            np.testing.assert_allclose(o["attention"], e["attention"], atol=2e-5)


def test_the_page_typed_into_shows_the_python_runtimes_output_and_attention(tiny_export, tiny_run):
    """The page as a user opens it from `python -m serving.page_server`: it picks the in-page back end,
    builds its form from it, and a beam search typed in shows the Python runtime's text and draws one
    heatmap row per output token."""
    runtime = Runtime(tiny_export, intra_op_threads=1)
    text = (tiny_run / "test.tsv").read_text(encoding="utf-8").splitlines()[0].split("\t")[0]
    expected = runtime.generate([text], DecodingOptions(method="beam"), return_attention=True)[0]
    with page_server(tiny_export) as url, chromium_page() as page:
        page.goto(url + "/")
        page.wait_for_selector("#request[data-state='ready']", timeout=30_000)
        assert "onnxruntime-web" in page.text_content("#model-facts")
        assert page.eval_on_selector_all("#method option", "options => options.map(o => o.value)") == ["greedy", "beam"]
        page.fill("#source", text)
        page.select_option("#method", "beam")
        page.click("#generate")
        page.wait_for_selector("#request[data-state='done']", timeout=30_000)
        assert page.text_content("#output") == expected.text
        assert page.get_attribute("#heatmap", "data-rows") == str(len(expected.tokens))
        # Bad input: one line in the page, nothing run.
        page.fill("#source", "   ")
        page.click("#generate")
        page.wait_for_selector("#request[data-state='error']", timeout=10_000)
        assert page.text_content("#error") == "inputs must be a non-empty text"
        page.fill("#source", text)
        page.click("#options-panel summary")  # the options are folded away until opened
        page.fill("#option-beam_size", "100000")  # more hypotheses than the vocabulary has ids
        page.click("#generate")
        page.wait_for_selector("#request[data-state='error']", timeout=10_000)
        assert page.text_content("#error").startswith("beam_size must be between 1 and the vocabulary size")
