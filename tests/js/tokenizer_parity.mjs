// Runs serving/static/sentencepiece.js on texts and prints what it gives as JSON, for
// tests/test_js_tokenizer.py to compare with the Python `sentencepiece` package.
//
//   node tests/js/tokenizer_parity.mjs MODEL INPUT
//
// INPUT is either a text file (one text a line, the newline at the end of the file ignored) or a
// `.json` file {"texts": [...], "decode": [[id, ...], ...], "output_rows": [[id, ...], ...],
// "max_source_length": N}, every key optional. Prints one JSON object:
//   {"vocab_size", "special": {"pad", "unk", "bos", "eos"},
//    "encode": ids per text, "pieces": their pieces, "roundtrip": decode(encode(text)) per text,
//    "decode": decode of each row of "decode", "output_ids": outputIds of each row of "output_rows",
//    "sources": encodeSources(texts, max_source_length) as {ids (flat), shape, lengths} when it is given}.
// An error (an unreadable or refused model) is printed as {"error": message} with exit status 1.

import { readFileSync } from "node:fs";
import { SentencePiece } from "../../serving/static/sentencepiece.js";

const [modelPath, inputPath] = process.argv.slice(2);
if (!modelPath || !inputPath) {
  process.stderr.write("usage: node tests/js/tokenizer_parity.mjs MODEL INPUT\n");
  process.exit(2);
}

let result;
try {
  const tokenizer = SentencePiece.fromBytes(new Uint8Array(readFileSync(modelPath)));
  const raw = readFileSync(inputPath, "utf8");
  let input;
  if (inputPath.endsWith(".json")) input = JSON.parse(raw);
  else {
    const lines = raw.split("\n");
    if (lines[lines.length - 1] === "") lines.pop();
    input = { texts: lines };
  }
  const texts = input.texts ?? [];
  const encoded = texts.map((text) => tokenizer.encode(text));
  result = {
    vocab_size: tokenizer.vocabSize,
    special: { pad: tokenizer.padId, unk: tokenizer.unkId, bos: tokenizer.bosId, eos: tokenizer.eosId },
    encode: encoded,
    pieces: encoded.map((ids) => tokenizer.pieces(ids)),
    roundtrip: encoded.map((ids) => tokenizer.decode(ids)),
    decode: (input.decode ?? []).map((ids) => tokenizer.decode(ids)),
    output_ids: (input.output_rows ?? []).map((row) => tokenizer.outputIds(row)),
  };
  if (input.max_source_length !== undefined) {
    const sources = tokenizer.encodeSources(texts, input.max_source_length);
    result.sources = { ids: Array.from(sources.ids), shape: sources.shape, lengths: sources.lengths };
  }
} catch (error) {
  process.stdout.write(JSON.stringify({ error: error.message }) + "\n");
  process.exit(1);
}
process.stdout.write(JSON.stringify(result) + "\n");
