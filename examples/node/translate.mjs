#!/usr/bin/env node
// An export (RUN/export/, written by `python -m export RUN`) run from Node.js with onnxruntime-node alone:
// the example for bindings in other languages. It reads what the Python runtime reads (config.json, the
// manifest's hashes) and runs one graph:
//
//   node examples/node/translate.mjs EXPORT_DIR [options] < ids.json
//
// ids.json: a JSON array of encoder-input rows, each a source's sentencepiece ids then EOS (what
// `python -m serving` encodes from a text); shorter rows are padded with the pad id. For each row it
// prints one JSON object on its own line, in input order: {"token_ids": [...]}, the generated ids before
// the first EOS (no BOS, no padding; the `token_ids` of `python -m serving --json --tokens`), and with
// --beam its "score".
//
// Options:
//   --beam N             beam search with N hypotheses (the export's beam_search graph; default: greedy,
//                        the generate graph)
//   --length-penalty A   beam search's GNMT length penalty (default 0.6, as the Python runtime's)
//   --min-new-tokens N   beam search: fewest tokens before EOS may end an output (default 0: no rule; the
//                        Python runtime's min_new_tokens, CTranslate2's min_decoding_length)
//   --max-length N       most tokens per output (default and limit: config.json's max_target_length)
//   --threads N          onnxruntime intra-op threads (default 1, as the Python runtime's)
//   --text               one text per line on stdin instead of ids; prints "input", "text" too
//                        (needs serving/static/sentencepiece.js)
//   --no-verify          skip the sha256 check of the loaded files against manifest.json
//
// onnxruntime-node comes from js/node_modules (`make js`), else from wherever Node resolves it (a copy of
// this file in a project of its own: `npm install onnxruntime-node@1.30.0`). Errors are one line on
// stderr and exit status 2, as the Python command's.

import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const FORMAT_VERSION = 2; // serving/export_config.py FORMAT_VERSION
const DEFAULT_LENGTH_PENALTY = 0.6; // serving/options.py DecodingOptions.length_penalty
const SENTENCEPIECE_JS = new URL("../../serving/static/sentencepiece.js", import.meta.url);

class UsageError extends Error {}

/** onnxruntime's message in one line: its reason, without the C++ signature of where it was raised. */
const ortMessage = (e) => {
  const line = String(e.message).split("\n")[0];
  return line.includes("onnxruntime::") ? line.slice(line.lastIndexOf(") ") + 2) : line;
};

const fail = (message) => {
  throw new UsageError(message);
};

function parseArgs(argv) {
  const args = { exportDir: null, beam: null, lengthPenalty: DEFAULT_LENGTH_PENALTY, maxLength: null,
                 minNewTokens: 0, threads: 1, text: false, verify: true };
  const positiveInt = (flag, value) => {
    const number = Number(value);
    if (!Number.isInteger(number) || number < 1) fail(`${flag} must be an integer >= 1, got ${value}`);
    return number;
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = () => (i + 1 < argv.length ? argv[++i] : fail(`${arg} needs a value`));
    if (arg === "--beam") args.beam = positiveInt(arg, value());
    else if (arg === "--length-penalty") {
      args.lengthPenalty = Number(value());
      if (!Number.isFinite(args.lengthPenalty) || args.lengthPenalty < 0) {
        fail(`--length-penalty must be a finite number >= 0, got ${argv[i]}`);
      }
    } else if (arg === "--min-new-tokens") {
      args.minNewTokens = Number(value());
      if (!Number.isInteger(args.minNewTokens) || args.minNewTokens < 0) {
        fail(`--min-new-tokens must be an integer >= 0, got ${argv[i]}`);
      }
    } else if (arg === "--max-length") args.maxLength = positiveInt(arg, value());
    else if (arg === "--threads") args.threads = positiveInt(arg, value());
    else if (arg === "--text") args.text = true;
    else if (arg === "--no-verify") args.verify = false;
    else if (arg === "-h" || arg === "--help") {
      process.stdout.write(readFileSync(fileURLToPath(import.meta.url), "utf8").split("\n\n")[0]
        .replace(/^#!.*\n/, "").replace(/^\/\/ ?/gm, "") + "\n");
      process.exit(0);
    } else if (arg.startsWith("-")) fail(`unknown option ${arg} (see --help)`);
    else if (args.exportDir === null) args.exportDir = arg;
    else fail(`unexpected argument ${arg}; the input comes on stdin`);
  }
  if (args.exportDir === null) fail("usage: node examples/node/translate.mjs EXPORT_DIR [--beam N] < ids.json");
  if (args.beam === null && argv.includes("--length-penalty")) fail("--length-penalty needs --beam");
  if (args.beam === null && argv.includes("--min-new-tokens")) {
    fail("--min-new-tokens needs --beam (the greedy graph has no min_length; --beam 1 --length-penalty 0 is greedy)");
  }
  return args;
}

// The export ----------------------------------------------------------------------------------------

function readJson(path, what) {
  if (!existsSync(path)) fail(`${path} is missing; export the run first (python -m export RUN_DIR)`);
  try {
    return JSON.parse(readFileSync(path, "utf8"));
  } catch (e) {
    return fail(`${path} is not valid JSON (${e.message}); export the run again`);
  }
}

/** config.json, checked as far as this program relies on it. */
function readConfig(exportDir) {
  if (!existsSync(exportDir)) fail(`export directory ${exportDir} does not exist; export a trained run first`);
  const config = readJson(join(exportDir, "config.json"), "the export config");
  if (config.format_version !== FORMAT_VERSION) {
    fail(`${join(exportDir, "config.json")} has format_version ${config.format_version}; this program reads ` +
         `version ${FORMAT_VERSION}; export the run again`);
  }
  for (const key of ["special_ids", "max_source_length", "max_target_length", "vocab_size", "graphs"]) {
    if (!(key in config)) fail(`${join(exportDir, "config.json")} lacks "${key}"; export the run again`);
  }
  // onnxruntime-node 1.30 computes the fused attention's first position wrongly (export.transformer_step).
  if (config.operators === "onnxruntime") {
    fail(`${exportDir} uses onnxruntime's fused attention, which onnxruntime-node 1.30 does not compute ` +
         "correctly; export the run again without --fused-attention");
  }
  return config;
}

/** Refuses files that differ from manifest.json, and an export that did not pass parity validation. */
function verify(exportDir, files) {
  const manifest = readJson(join(exportDir, "manifest.json"), "the manifest");
  if (manifest.validated !== true) {
    fail(`${exportDir} did not pass parity validation (manifest.json); run python -m export.validate RUN`);
  }
  for (const file of files) {
    const expected = manifest.files?.[file];
    if (!expected) fail(`${join(exportDir, file)} is not listed in manifest.json; export the run again`);
    const path = join(exportDir, file);
    if (!existsSync(path)) fail(`${path} is missing; export the run again`);
    const actual = createHash("sha256").update(readFileSync(path)).digest("hex");
    if (actual !== expected) fail(`${path} does not match manifest.json (changed after export); export the run again`);
  }
}

async function importOnnxruntime() {
  // js/node_modules first (this repository's pinned copy), then Node's own resolution.
  let specifier = "onnxruntime-node";
  try {
    specifier = pathToFileURL(createRequire(new URL("../../js/package.json", import.meta.url))
      .resolve("onnxruntime-node")).href;
  } catch {
    // not installed under js/: try a bare import below
  }
  try {
    const module = await import(specifier);
    return module.default ?? module;
  } catch (e) {
    if (e.code === "ERR_MODULE_NOT_FOUND" || e.code === "MODULE_NOT_FOUND") {
      fail("onnxruntime-node is not installed; run make js (npm ci --prefix js)");
    }
    return fail(`cannot load onnxruntime-node: ${e.message.split("\n")[0]}`);
  }
}

async function importSentencePiece() {
  if (!existsSync(SENTENCEPIECE_JS)) {
    fail(`--text needs ${fileURLToPath(SENTENCEPIECE_JS)}, which this checkout lacks; pass ids instead`);
  }
  return (await import(SENTENCEPIECE_JS.href)).SentencePiece;
}

// Input ---------------------------------------------------------------------------------------------

function readStdin() {
  if (process.stdin.isTTY) fail("no input; pipe a JSON array of id rows (or, with --text, lines of text) to stdin");
  return readFileSync(0, "utf8");
}

/** The ids rows as int32 (batch, longest), padded with `pad`. */
function encoderInputFromIds(input, config) {
  let rows;
  try {
    rows = JSON.parse(input);
  } catch (e) {
    fail(`stdin is not valid JSON (${e.message}); give a JSON array of id rows`);
  }
  if (!Array.isArray(rows) || rows.length === 0) fail("stdin must hold a non-empty JSON array of id rows");
  const vocab = config.vocab_size;
  rows.forEach((row, i) => {
    if (!Array.isArray(row) || row.length === 0) fail(`row ${i} must be a non-empty array of ids`);
    if (row.length > config.max_source_length) {
      fail(`row ${i} has ${row.length} ids; the model takes at most max_source_length ${config.max_source_length}`);
    }
    for (const id of row) {
      if (!Number.isInteger(id) || id < 0 || id >= vocab) fail(`row ${i} holds ${id}, not an id in [0, ${vocab})`);
    }
  });
  const longest = Math.max(...rows.map((row) => row.length));
  const ids = new Int32Array(rows.length * longest).fill(config.special_ids.pad);
  rows.forEach((row, i) => ids.set(row, i * longest));
  return { ids, shape: [rows.length, longest] };
}

function textsFromLines(input) {
  const texts = input.split(/\r?\n/);
  if (texts.at(-1) === "") texts.pop();
  if (texts.length === 0) fail("no input text; give one text per line on stdin");
  texts.forEach((text, i) => text.trim() || fail(`input line ${i + 1} is empty; give non-empty text`));
  return texts;
}

// Generation ----------------------------------------------------------------------------------------

/** The graph `name` of config.json, as a session; its description says which inputs it takes. */
async function loadGraph(ort, exportDir, config, name, threads) {
  const graph = config.graphs[name];
  const options = { intraOpNumThreads: threads, interOpNumThreads: 1, executionMode: "sequential" };
  try {
    return { graph, session: await ort.InferenceSession.create(join(exportDir, graph.file), options) };
  } catch (e) {
    return fail(`cannot load ${join(exportDir, graph.file)}: ${ortMessage(e)}; export the run again`);
  }
}

/** Runs the greedy (`generate`) or beam (`beam_search`) graph: {tokens: Int32Array, shape, scores}. */
async function search(ort, { graph, session }, encoderInput, args, maxLength) {
  const scalar = { max_length: new ort.Tensor("int32", Int32Array.of(maxLength), []) };
  if (args.beam !== null) {
    scalar.beam_size = new ort.Tensor("int32", Int32Array.of(args.beam), []);
    scalar.length_penalty = new ort.Tensor("float32", Float32Array.of(args.lengthPenalty), []);
    scalar.min_length = new ort.Tensor("int32", Int32Array.of(args.minNewTokens), []);
  }
  const feeds = {};
  for (const input of graph.inputs) {
    if (input.name === "encoder_input") feeds[input.name] = new ort.Tensor("int32", encoderInput.ids, encoderInput.shape);
    else if (input.name in scalar) feeds[input.name] = scalar[input.name];
    else fail(`graph ${graph.file} takes ${input.name}, which this program does not know; update it`);
  }
  const wanted = graph.outputs.map((o) => o.name).filter((name) => name === "tokens" || name === "scores");
  let outputs; // attention, if the graph has it, is not fetched
  try {
    outputs = await session.run(feeds, wanted);
  } catch (e) {
    fail(`running ${graph.file} failed: ${ortMessage(e)}`);
  }
  return { tokens: outputs.tokens.data, shape: outputs.tokens.dims, scores: outputs.scores?.data };
}

/** Row `b`'s ids before the first EOS, without BOS and padding (serving.tokenizer `output_ids`). */
function outputIds(tokens, shape, b, { pad, bos, eos }) {
  const ids = [];
  for (const id of tokens.subarray(b * shape[1], (b + 1) * shape[1])) {
    if (id === eos) break;
    if (id !== pad && id !== bos) ids.push(id);
  }
  return ids;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const exportDir = args.exportDir;
  const config = readConfig(exportDir);
  const name = args.beam === null ? "generate" : "beam_search";
  if (!(name in config.graphs)) {
    fail(`${exportDir} has no ${name} graph (config.json lists ${Object.keys(config.graphs).join(", ")}); ` +
         "export the run again with this version of the project");
  }
  const maxLength = args.maxLength ?? config.max_target_length;
  if (maxLength > config.max_target_length) {
    fail(`--max-length ${maxLength} is above the limit max_target_length ${config.max_target_length}`);
  }
  if (args.minNewTokens >= maxLength) {
    fail(`--min-new-tokens ${args.minNewTokens} leaves no room for EOS within ${maxLength} tokens; lower it or raise --max-length`);
  }
  if (args.minNewTokens > 0 && !config.graphs[name].inputs.some((i) => i.name === "min_length")) {
    fail(`${exportDir}'s beam_search graph has no min_length input; export the run again for --min-new-tokens`);
  }
  const special = config.special_ids;
  const tokenizerFile = config.tokenizer ?? "tokenizer.model";
  if (args.verify) verify(exportDir, ["config.json", config.graphs[name].file, ...(args.text ? [tokenizerFile] : [])]);

  const input = readStdin();
  let texts = null;
  let tokenizer = null;
  let encoderInput;
  if (args.text) {
    texts = textsFromLines(input);
    const SentencePiece = await importSentencePiece();
    tokenizer = SentencePiece.fromBytes(new Uint8Array(readFileSync(join(exportDir, tokenizerFile))));
    encoderInput = tokenizer.encodeSources(texts, config.max_source_length);
  } else {
    encoderInput = encoderInputFromIds(input, config);
  }

  const ort = await importOnnxruntime();
  const graph = await loadGraph(ort, exportDir, config, name, args.threads);
  const result = await search(ort, graph, encoderInput, args, maxLength);
  const lines = [];
  for (let b = 0; b < encoderInput.shape[0]; b++) {
    const record = {};
    if (texts) {
      const row = result.tokens.subarray(b * result.shape[1], (b + 1) * result.shape[1]);
      const ids = tokenizer.outputIds(row, special);
      Object.assign(record, { input: texts[b], text: tokenizer.decode(ids), token_ids: Array.from(ids) });
    } else {
      record.token_ids = outputIds(result.tokens, result.shape, b, special);
    }
    if (result.scores) record.score = Math.round(result.scores[b] * 1e6) / 1e6;
    lines.push(JSON.stringify(record));
  }
  process.stdout.write(lines.join("\n") + "\n");
}

main().catch((e) => {
  if (!(e instanceof UsageError)) throw e; // a bug: keep the stack trace
  process.stderr.write(`error: ${e.message}\n`);
  process.exitCode = 2;
});
