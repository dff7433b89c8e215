// The page's second back end: the export itself, run in the page by onnxruntime-web (WebAssembly), with
// no server behind it. It offers the three methods `ServerBackend` offers (describe, requestSchema,
// generate), so page.js draws the same form, output and attention for both.
//
// What it runs: `onnx/beam_search.onnx` (the runtime's beam search in one graph; beam 1 with no length
// penalty is greedy decoding) on ids made by `sentencepiece.js` from the export's own `tokenizer.model`,
// cut and padded as `serving/tokenizer.py`'s `encode_sources`; outputs are cut and decoded as the
// Python runtime cuts and decodes them (`serving/runtime.py` `_generations`), so the page shows what
// `python -m serving` prints. tests/test_web_runtime.py checks that in a real Chromium.

import { SentencePiece } from "./sentencepiece.js";

const DESCRIPTIONS = {
  method: "greedy: the most likely token each step; beam: beam_size hypotheses ranked with the GNMT length penalty",
  max_new_tokens: "most output tokens (at most the model's max_target_length)",
  beam_size: "beam: hypotheses kept",
  length_penalty: "beam: GNMT length-penalty alpha (0: none)",
  min_new_tokens: "fewest tokens before EOS may end the output (0: no rule)",
};

/** `value` rounded to `digits` decimals, as the server's JSON rounds it (Python's `round`). */
function rounded(value, digits) {
  const scale = 10 ** digits;
  return Math.round(value * scale) / scale;
}

export class WebBackend {
  /**
   * Loads an export over HTTP: `exportUrl` is the folder holding config.json (ending in "/").
   * @param {object} ort the onnxruntime-web module (its `env.wasm` already pointed at the .wasm files)
   */
  static async load(ort, exportUrl) {
    const fetchOk = async (path) => {
      const response = await fetch(new URL(path, exportUrl));
      if (!response.ok) throw new Error(`cannot load ${path} from ${exportUrl}: ${response.status} ${response.statusText}`);
      return response;
    };
    const config = await (await fetchOk("config.json")).json();
    const graph = config.graphs.beam_search;
    if (!graph) throw new Error("this export has no beam_search graph; export the run again");
    // onnxruntime-web 1.30 hangs on the fused attention's first position (export.transformer_step).
    if (config.operators === "onnxruntime") {
      throw new Error("this export uses onnxruntime's fused attention, which onnxruntime-web does not run " +
                      "correctly; export the run again without --fused-attention");
    }
    const tokenizer = SentencePiece.fromBytes(new Uint8Array(await (await fetchOk(config.tokenizer)).arrayBuffer()));
    const model = new Uint8Array(await (await fetchOk(graph.file)).arrayBuffer());
    const session = await ort.InferenceSession.create(model, { executionProviders: ["wasm"] });
    return new WebBackend(ort, config, tokenizer, session);
  }

  constructor(ort, config, tokenizer, session) {
    this.ort = ort;
    this.config = config;
    this.tokenizer = tokenizer;
    this.session = session;
    this.hasAttention = config.graphs.beam_search.outputs.some((o) => o.name === "attention");
    // An export made before the graph took min_length still runs, without that rule.
    this.takesMinLength = config.graphs.beam_search.inputs.some((i) => i.name === "min_length");
  }

  async describe() {
    const c = this.config;
    return { task: c.task, model: c.model, family: c.family, max_source_length: c.max_source_length,
             max_target_length: c.max_target_length, vocab_size: c.vocab_size, int8: false,
             providers: ["onnxruntime-web (WebAssembly, in this page)"], has_attention: this.hasAttention };
  }

  /** The options the in-graph search takes, in the shape of the server's request schema. */
  async requestSchema() {
    return {
      method: { type: "string", enum: ["greedy", "beam"], default: "greedy", description: DESCRIPTIONS.method },
      max_new_tokens: { type: "integer", default: this.config.max_target_length, description: DESCRIPTIONS.max_new_tokens },
      beam_size: { type: "integer", default: 4, description: DESCRIPTIONS.beam_size },
      length_penalty: { type: "number", default: 0.6, description: DESCRIPTIONS.length_penalty },
      ...(this.takesMinLength
        ? { min_new_tokens: { type: "integer", default: 0, description: DESCRIPTIONS.min_new_tokens } }
        : {}),
    };
  }

  /** Checks a request body as the server does, with its one-line messages. */
  options(body) {
    const maxLength = body.max_new_tokens ?? this.config.max_target_length;
    const beam = body.method === "beam";
    const beamSize = beam ? (body.beam_size ?? 4) : 1;
    const lengthPenalty = beam ? (body.length_penalty ?? 0.6) : 0;
    const minNewTokens = body.min_new_tokens ?? 0;
    if (typeof body.inputs !== "string" || body.inputs.trim() === "") throw new Error("inputs must be a non-empty text");
    if (!["greedy", "beam"].includes(body.method)) throw new Error(`method must be greedy or beam here, got ${body.method}`);
    if (!Number.isInteger(maxLength) || maxLength < 1 || maxLength > this.config.max_target_length) {
      throw new Error(`max_new_tokens must be between 1 and ${this.config.max_target_length}, got ${maxLength}`);
    }
    if (!Number.isInteger(beamSize) || beamSize < 1 || beamSize > this.config.vocab_size) {
      throw new Error(`beam_size must be between 1 and the vocabulary size ${this.config.vocab_size}, got ${beamSize}`);
    }
    if (!Number.isFinite(lengthPenalty) || lengthPenalty < 0) throw new Error(`length_penalty must be >= 0, got ${lengthPenalty}`);
    if (!Number.isInteger(minNewTokens) || minNewTokens < 0) throw new Error(`min_new_tokens must be >= 0, got ${minNewTokens}`);
    if (minNewTokens >= maxLength) {
      throw new Error(`min_new_tokens ${minNewTokens} leaves no room for EOS within ${maxLength} tokens; lower it or raise max_new_tokens`);
    }
    if (minNewTokens > 0 && !this.takesMinLength) {
      throw new Error("this export's beam_search graph has no min_length input; export the run again for min_new_tokens");
    }
    return { maxLength, beamSize, lengthPenalty, minNewTokens };
  }

  /** Runs the search on ids `(batch, longest)`; {tokens: rows of ids, scores, attention (or null), width}. */
  async search(ids, shape, { maxLength, beamSize, lengthPenalty, minNewTokens = 0 }) {
    const { Tensor } = this.ort;
    const feeds = {
      encoder_input: new Tensor("int32", ids, shape),
      max_length: new Tensor("int32", Int32Array.of(maxLength), []),
      beam_size: new Tensor("int32", Int32Array.of(beamSize), []),
      length_penalty: new Tensor("float32", Float32Array.of(lengthPenalty), []),
    };
    if (this.takesMinLength) feeds.min_length = new Tensor("int32", Int32Array.of(minNewTokens), []);
    const outputs = await this.session.run(feeds);
    const [batch, width] = outputs.tokens.dims;
    const tokens = [];
    for (let b = 0; b < batch; b += 1) tokens.push(Array.from(outputs.tokens.data.subarray(b * width, (b + 1) * width)));
    return { tokens, scores: Array.from(outputs.scores.data), attention: outputs.attention || null, width };
  }

  /** Yields one "done" event, shaped as the server's (text, score, pieces, attention). */
  async *generate(body, signal) {
    const options = this.options(body);
    const c = this.config;
    const special = c.special_ids;
    const { ids, shape, lengths } = this.tokenizer.encodeSources([body.inputs], c.max_source_length);
    const result = await this.search(ids, shape, options);
    if (signal?.aborted) return;
    const row = result.tokens[0];
    const eos = row.indexOf(special.eos);
    const produced = eos >= 0 ? eos + 1 : row.length;  // the produced tokens, EOS included
    const outputIds = this.tokenizer.outputIds(row, special);
    const source = Array.from(ids.subarray(0, lengths[0]));
    const data = { text: this.tokenizer.decode(outputIds), score: rounded(result.scores[0], 6),
                   tokens: this.tokenizer.pieces(row.slice(0, produced)), token_ids: outputIds,
                   source_tokens: this.tokenizer.pieces(source) };
    if (result.attention && (body.return_attention || body.return_attention_heads)) {
      // (batch, width, layers, heads, source_length) -> heads[layer][head][token][source], and the last
      // layer's mean over heads, as `Generation.to_json` gives them.
      const [, width, layers, heads, sourceLength] = result.attention.dims;
      const weights = result.attention.data;
      const at = (t, l, h, s) => weights[(((t * layers + l) * heads + h) * sourceLength) + s];
      const grid = (f) => Array.from({ length: produced }, (_, t) => Array.from({ length: lengths[0] }, (_, s) => f(t, s)));
      data.attention = grid((t, s) => {
        let sum = 0;
        for (let h = 0; h < heads; h += 1) sum += at(t, layers - 1, h, s);
        return rounded(sum / heads, 5);
      });
      if (body.return_attention_heads) {
        data.attention_heads = Array.from({ length: layers }, (_, l) => Array.from({ length: heads },
          (_, h) => grid((t, s) => rounded(at(t, l, h, s), 5))));
      }
      if (width < produced) throw new Error("the search returned fewer attention rows than tokens");
    }
    yield { name: "done", data };
  }
}
