"""The export run outside Python: `examples/node/translate.mjs` with onnxruntime-node, and onnxruntime-web
(WASM) in headless Chromium on the files `python -m serving.page_server` serves, both giving the Python
runtime's greedy ids on the export's test inputs (`reference.npz`'s greedy chunks: the test split, encoded);
every graph loading in onnxruntime-node (the JavaScript packages are 1.30, the Python one may be newer);
with a `beam_search` graph, the example's `--beam` against Python's onnxruntime on that graph.

Skips, saying why, without node, without js/'s packages (`make js`; `make test` installs them when npm is
on PATH), without chromium or playwright.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from browser import chromium_page, page_server
from helpers import ROOT

from serving.errors import ServingError
from serving.options import DecodingOptions
from serving.page_server import ISOLATION_HEADERS, ORT_WEB_DIST, PageFiles

NODE = shutil.which("node")
TRANSLATE = ROOT / "examples" / "node" / "translate.mjs"
ORT_NODE = ROOT / "js" / "node_modules" / "onnxruntime-node"
SENTENCEPIECE_JS = ROOT / "serving" / "static" / "sentencepiece.js"
TEXTS = ["september 27, 1994", "9/27/94", "MONDAY, NOVEMBER 30, 1992", "tue, 27 sep 1994"]

needs_node = pytest.mark.skipif(NODE is None, reason="node is not on PATH (Node.js 18+ runs examples/node)")
needs_ort_node = pytest.mark.skipif(not ORT_NODE.is_dir(), reason="js/node_modules lacks onnxruntime-node: run make js")
needs_ort_web = pytest.mark.skipif(not ORT_WEB_DIST.is_dir(), reason="js/node_modules lacks onnxruntime-web: run make js")


@pytest.fixture(scope="module")
def test_inputs(tiny_export) -> np.ndarray:
    """The export's test-split encoder inputs (PAD-padded int32 rows), the first greedy chunk."""
    with np.load(tiny_export / "reference.npz") as reference:
        return np.ascontiguousarray(reference["greedy/chunk000/encoder_input"], np.int32)


@pytest.fixture(scope="module")
def python_ids(runtime, test_inputs) -> list[list[int]]:
    """The Python runtime's greedy output ids (before EOS, no BOS/PAD) of each test input."""
    result = runtime.generate_ids(test_inputs, DecodingOptions())
    return [runtime.tokenizer.output_ids(row) for row in result.tokens]


def translate(export_dir: Path, stdin: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([NODE, str(TRANSLATE), str(export_dir), *args], input=stdin, capture_output=True,
                          text=True, timeout=60, cwd=ROOT)


def records(done: subprocess.CompletedProcess) -> list[dict]:
    assert done.returncode == 0, done.stderr[-2000:]
    return [json.loads(line) for line in done.stdout.splitlines()]


# Node.js ---------------------------------------------------------------------------------------------

@needs_node
@needs_ort_node
def test_node_example_gives_the_python_runtimes_greedy_ids(tiny_export, test_inputs, python_ids):
    done = translate(tiny_export, json.dumps(test_inputs.tolist()))
    assert [record["token_ids"] for record in records(done)] == python_ids
    # Ragged rows are padded by the example itself: the same ids.
    rows = [[int(i) for i in row[row != 0]] for row in test_inputs[:8]]
    assert [record["token_ids"] for record in records(translate(tiny_export, json.dumps(rows)))] == python_ids[:8]


CUSTOM_OP_DOMAINS = {"ai.onnx.contrib"}
LOAD_GRAPHS = """
const ort = require("onnxruntime-node");
const files = JSON.parse(process.argv[1]);
Promise.all(files.map((file) => ort.InferenceSession.create(file).then(() => null, (e) => e.message.split("\\n")[0])))
  .then((errors) => console.log(JSON.stringify(Object.fromEntries(files.map((f, i) => [f, errors[i]])))));
"""


@needs_node
@needs_ort_node
def test_every_graph_of_the_export_loads_in_onnxruntime_node(tiny_export):
    """onnxruntime-node and -web 1.30 (one core) read ONNX IR versions up to 13: a graph written with a
    newer `onnx` package's default (`onnx.helper.make_model`: IR 14 with onnx 1.23) loads in the
    Python runtime's onnxruntime but nowhere else. Graphs of custom-op domains (onnxruntime-extensions'
    `ai.onnx.contrib`: the text-in graph) need that library and are left out."""
    import onnx

    config = json.loads((tiny_export / "config.json").read_text())
    files = [entry["file"] for entry in config["graphs"].values()]
    files += [entry["file"] for entry in ((config.get("quantized") or {}).get("graphs") or {}).values()]
    files = [f for f in files if not any(o.domain in CUSTOM_OP_DOMAINS for o in
                                         onnx.load(tiny_export / f, load_external_data=False).opset_import)]
    done = subprocess.run([NODE, "-e", LOAD_GRAPHS, json.dumps([str(tiny_export / f) for f in files])],
                          capture_output=True, text=True, timeout=60, cwd=ROOT / "js")
    assert done.returncode == 0, done.stderr[-2000:]
    # onnxruntime's message ends with the reason, after the C++ signature of where it was raised.
    errors = {Path(path).relative_to(tiny_export).as_posix(): error.rsplit(") ", 1)[-1]
              for path, error in json.loads(done.stdout).items() if error}
    assert errors == {}


@needs_node
@needs_ort_node
@pytest.mark.skipif(not SENTENCEPIECE_JS.is_file(), reason="serving/static/sentencepiece.js is not in this checkout")
def test_node_example_takes_text_through_the_javascript_tokenizer(tiny_export, runtime):
    got = records(translate(tiny_export, "\n".join(TEXTS) + "\n", "--text"))
    expected = runtime.generate(TEXTS)
    assert [r["input"] for r in got] == TEXTS
    assert [r["text"] for r in got] == [g.text for g in expected]
    assert [r["token_ids"] for r in got] == [g.token_ids for g in expected]


@needs_node
@needs_ort_node
def test_node_example_beam_search_equals_onnxruntime_python_on_the_same_graph(tiny_export, test_inputs):
    import onnxruntime as ort

    graphs = json.loads((tiny_export / "config.json").read_text())["graphs"]
    if "beam_search" not in graphs:
        pytest.skip("this export has no beam_search graph yet")
    inputs = test_inputs[:16]
    # With min_length, which only this graph takes: an output of at least 4 tokens before its EOS.
    got = records(translate(tiny_export, json.dumps(inputs.tolist()), "--beam", "3", "--length-penalty", "0.6",
                            "--min-new-tokens", "4"))
    session = ort.InferenceSession(str(tiny_export / graphs["beam_search"]["file"]), providers=["CPUExecutionProvider"])
    max_length = json.loads((tiny_export / "config.json").read_text())["max_target_length"]
    feeds = {"encoder_input": inputs, "max_length": np.array(max_length, np.int32),
             "beam_size": np.array(3, np.int32), "length_penalty": np.array(0.6, np.float32),
             "min_length": np.array(4, np.int32)}
    tokens, scores = session.run(["tokens", "scores"], {i.name: feeds[i.name] for i in session.get_inputs()})
    special = json.loads((tiny_export / "config.json").read_text())["special_ids"]
    from serving.tokenizer import strip_special_ids

    assert [r["token_ids"] for r in got] == [strip_special_ids(row, special["pad"], special["bos"], special["eos"])
                                             for row in tokens]
    np.testing.assert_allclose([r["score"] for r in got], scores, atol=1e-5)
    assert min(len(r["token_ids"]) for r in got) >= 4


@needs_node
@pytest.mark.parametrize("args, stdin, message", [
    (("--beam", "0"), "[[5, 3]]", "--beam must be an integer >= 1"),
    ((), "not json", "stdin is not valid JSON"),
    ((), "[[5, 99999]]", "not an id in [0,"),
    (("--max-length", "1000"), "[[5, 3]]", "is above the limit max_target_length"),
    (("--min-new-tokens", "2"), "[[5, 3]]", "--min-new-tokens needs --beam"),
    (("--beam", "2", "--max-length", "5", "--min-new-tokens", "5"), "[[5, 3]]", "leaves no room for EOS"),
])
def test_node_example_errors_are_one_line(tiny_export, args, stdin, message):
    done = translate(tiny_export, stdin, *args)
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and message in done.stderr and done.stderr.count("\n") == 1


@needs_node
def test_node_example_refuses_an_export_with_fused_attention(tiny_export, tmp_path):
    """onnxruntime-node 1.30 gets the fused attention's first position wrong: refused, in one line."""
    export = tmp_path / "export"
    shutil.copytree(tiny_export, export)
    config = json.loads((export / "config.json").read_text())
    (export / "config.json").write_text(json.dumps({**config, "operators": "onnxruntime"}))
    done = translate(export, "[[5, 3]]")
    assert done.returncode == 2 and "without --fused-attention" in done.stderr and done.stderr.count("\n") == 1


@needs_node
def test_node_example_refuses_a_missing_export(tmp_path):
    done = translate(tmp_path / "nothing", "[[5, 3]]")
    assert done.returncode == 2 and "does not exist" in done.stderr and done.stderr.count("\n") == 1


# The page server --------------------------------------------------------------------------------------

def get(url: str) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


@needs_ort_web
def test_page_server_serves_the_page_the_export_and_onnxruntime_web(tiny_export):
    with page_server(tiny_export) as url:
        for path, content_type in [("/", "text/html"), ("/static/page.js", "text/javascript"),
                                   ("/static/page.css", "text/css"), ("/export/config.json", "application/json"),
                                   ("/export/manifest.json", "application/json"),
                                   ("/export/tokenizer.model", "application/octet-stream"),
                                   ("/export/onnx/generate.onnx", "application/octet-stream"),
                                   ("/ort/ort.wasm.min.mjs", "text/javascript"),
                                   ("/ort/ort-wasm-simd-threaded.mjs", "text/javascript"),
                                   ("/ort/ort-wasm-simd-threaded.wasm", "application/wasm")]:
            status, headers, body = get(url + path)
            assert status == 200, path
            assert headers["Content-Type"].startswith(content_type), path
            assert all(headers[name] == value for name, value in ISOLATION_HEADERS.items()), path
        assert get(url + "/export/onnx/generate.onnx")[2] == (tiny_export / "onnx" / "generate.onnx").read_bytes()
        # Only what a runtime in the page loads; no listings, nothing outside the three roots.
        for path in ["/export/reference.npz", "/export/parity.json", "/export/saved_model/saved_model.pb",
                     "/export/", "/static/", "/ort/", "/ort/../package.json", "/export/%2e%2e/run.log",
                     "/static/%2e%2e/page_server.py", "/export/onnx/../config.json", "/js/package.json"]:
            assert get(url + path)[0] == 404, path
        request = urllib.request.Request(url + "/", method="POST", data=b"{}")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 405


def test_page_server_says_to_run_make_js_without_onnxruntime_web(tiny_export, tmp_path):
    with pytest.raises(ServingError, match="run make js"):
        PageFiles.load(tiny_export, ort_dir=tmp_path)


# onnxruntime-web in Chromium -----------------------------------------------------------------------------

# A minimal page of the page server's origin (fulfilled by Playwright with the server's headers): what an
# in-page back end does, on ids.
TEST_PAGE = "/web-runtime-test.html"
TEST_HTML = """<!doctype html><meta charset="utf-8"><title>onnxruntime-web test</title>
<script type="module">
  import * as ort from "/ort/ort.wasm.min.mjs";
  ort.env.wasm.wasmPaths = "/ort/";   // ort-wasm-simd-threaded.{mjs,wasm}: from this server, never a CDN
  ort.env.wasm.numThreads = 1;
  window.generate = async ({ rows, longest, maxLength }) => {
    const session = await ort.InferenceSession.create("/export/onnx/generate.onnx", { executionProviders: ["wasm"] });
    const encoderInput = new ort.Tensor("int32", Int32Array.from(rows.flat()), [rows.length, longest]);
    const maxLengthTensor = new ort.Tensor("int32", Int32Array.of(maxLength), []);
    const { tokens } = await session.run({ encoder_input: encoderInput, max_length: maxLengthTensor });
    return { tokens: Array.from(tokens.data), dims: tokens.dims, isolated: self.crossOriginIsolated };
  };
  window.pageReady = true;
</script>"""


@needs_ort_web
def test_onnxruntime_web_in_chromium_gives_the_python_runtimes_greedy_ids(tiny_export, runtime, test_inputs,
                                                                          python_ids):
    with page_server(tiny_export) as url, chromium_page() as page:
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.route(url + TEST_PAGE, lambda route: route.fulfill(
            status=200, body=TEST_HTML, headers={"Content-Type": "text/html; charset=utf-8", **ISOLATION_HEADERS}))
        page.goto(url + TEST_PAGE)
        page.wait_for_function("window.pageReady === true", timeout=20_000)
        result = page.evaluate("args => window.generate(args)",
                               {"rows": test_inputs.tolist(), "longest": int(test_inputs.shape[1]),
                                "maxLength": runtime.max_target_length})
        assert not errors
    assert result["isolated"] is True  # the server's headers make SharedArrayBuffer (WASM threads) available
    tokens = np.asarray(result["tokens"], np.int32).reshape(result["dims"])
    assert tokens.shape == (len(test_inputs), runtime.max_target_length)
    assert [runtime.tokenizer.output_ids(row) for row in tokens] == python_ids
