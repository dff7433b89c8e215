/**
 * SentencePiece in plain JavaScript: the export's `tokenizer.model` read and applied exactly as the
 * Python `sentencepiece` package (C++ 0.2.x) does, so a browser page or a Node program gives the ids the
 * serving runtime (`serving/tokenizer.py`) gives. An ES module with no dependencies (browsers, Node 20).
 *
 * What it implements, each a transcription of the C++ source named:
 *   - the ModelProto protobuf wire format (sentencepiece_model.proto): pieces (piece, score, type),
 *     trainer_spec (model_type, the special pieces, whose ids are found as SentencePieceProcessor finds
 *     them, unk_surface), normalizer_spec (add_dummy_prefix, remove_extra_whitespaces,
 *     escape_whitespaces, precompiled_charsmap);
 *   - normalization (normalizer.cc): the precompiled character map (a darts-clone double-array trie
 *     read as it is stored, the longest match wins), user-defined symbols left unnormalized, the dummy
 *     prefix "▁", whitespace escaping and, when the model asks for it, squeezing of extra spaces. The
 *     project's models use an identity map with one rule (U+FFFF -> U+FFFE); since the C++ normalizer
 *     has no step besides the map, sentencepiece's own maps (nmt_nfkc, the default) come out the same
 *     way, which tests/test_js_tokenizer.py checks;
 *   - the "bpe" model (bpe_model.cc): characters (user-defined symbols matched first), merges by piece
 *     score, ties to the leftmost pair, UNUSED pieces resegmented into the pieces they were merged from;
 *   - the "char" model (char_model.cc) and the "unigram" model (unigram_model.cc, the default optimized
 *     Viterbi, with its float32 arithmetic and its unknown-character penalty);
 *   - encoding (sentencepiece_processor.cc): a run of consecutive unknown pieces becomes one UNK id;
 *   - decoding: control pieces dropped, UNK as the model's unk_surface (" ⁇ " by default), "▁" as a
 *     space, the first leading "▁" removed (every leading one when extra spaces are squeezed).
 * On top of it, `encodeSources` and `outputIds` are `serving/tokenizer.py`'s encode_sources and
 * strip_special_ids.
 *
 * What it refuses, with an Error at load rather than tokenizing differently: "word" models, byte
 * fallback (BYTE pieces), treat_whitespace_as_suffix, a denormalizer (decode-side normalization), and
 * malformed models (no UNK piece, empty or repeated pieces, a broken character map).
 *
 * Text is taken as JavaScript strings; a lone surrogate is read as U+FFFD, as `TextEncoder` writes it
 * (Python cannot encode one to UTF-8 at all).
 *
 * Usage:
 *   const tokenizer = SentencePiece.fromBytes(new Uint8Array(await (await fetch("tokenizer.model")).arrayBuffer()));
 *   const { ids, shape, lengths } = tokenizer.encodeSources(["Ein Mann läuft."], config.max_source_length);
 *   const text = tokenizer.decode(tokenizer.outputIds(generatedRow));
 */

const SPACE_SYMBOL = "\u2581"; // "▁", what a space becomes in a piece
const DEFAULT_UNK_SURFACE = " \u2047 "; // " ⁇ ", sentencepiece's kDefaultUnknownSymbol
const UNK_PENALTY = 10.0; // unigram_model.cc kUnkPenalty
const FLT_MAX = 3.4028234663852886e38;
const FLT_MIN = 1.1754943508222875e-38; // the smallest normal float, unigram's initial max_score_

// ModelProto.SentencePiece.Type
export const PieceType = Object.freeze({
  NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5, BYTE: 6,
});
// TrainerSpec.ModelType
const MODEL_TYPES = { 1: "unigram", 2: "bpe", 3: "word", 4: "char" };

const f32 = Math.fround;
const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder("utf-8");

// --- protobuf wire format ------------------------------------------------------------------------

/** A minimal protobuf reader over one message's bytes: fields as (number, wire type, value). */
class ProtoReader {
  constructor(bytes, start = 0, end = bytes.length) {
    this.bytes = bytes;
    this.pos = start;
    this.end = end;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  /** A varint as [low 32 bits, the bits above] (int32 fields such as pad_id = -1 take 10 bytes). */
  varint() {
    let lo = 0;
    let hi = 0;
    for (let shift = 0; shift < 70; shift += 7) {
      if (this.pos >= this.end) throw new Error("truncated varint");
      const b = this.bytes[this.pos++];
      const bits = b & 0x7f;
      if (shift < 28) lo |= bits << shift;
      else if (shift === 28) {
        lo |= (bits & 0x0f) << 28;
        hi |= bits >>> 4;
      } else hi |= bits << (shift - 32);
      if (!(b & 0x80)) return [lo >>> 0, hi >>> 0];
    }
    throw new Error("varint longer than 10 bytes");
  }

  /** The next field as {field, wire, value}: value is [lo, hi] for varints, a float for fixed32 (every
   * fixed32 field of ModelProto is a float), a byte range [start, end] for length-delimited fields;
   * null at the end. */
  next() {
    if (this.pos >= this.end) return null;
    const [key, keyHi] = this.varint();
    if (keyHi) throw new Error("field number out of range");
    const field = key >>> 3;
    const wire = key & 7;
    let value;
    if (wire === 0) value = this.varint();
    else if (wire === 1) {
      this.skip(8);
      value = null;
    } else if (wire === 2) {
      const [length, lengthHi] = this.varint();
      if (lengthHi || this.pos + length > this.end) throw new Error("truncated field");
      value = [this.pos, this.pos + length];
      this.pos += length;
    } else if (wire === 5) {
      this.skip(4);
      value = this.view.getFloat32(this.pos - 4, true);
    } else throw new Error(`unsupported wire type ${wire}`);
    return { field, wire, value };
  }

  skip(n) {
    if (this.pos + n > this.end) throw new Error("truncated field");
    this.pos += n;
  }

  string([start, end]) {
    return utf8Decoder.decode(this.bytes.subarray(start, end));
  }

  sub([start, end]) {
    return new ProtoReader(this.bytes, start, end);
  }
}

const asInt32 = ([lo]) => lo | 0;
const asBool = ([lo, hi]) => lo !== 0 || hi !== 0;

function expectWire(f, wire, what) {
  if (f.wire !== wire) throw new Error(`${what}: unexpected wire type ${f.wire}`);
}

/** Reads the ModelProto fields this tokenizer uses; absent fields take the proto2 defaults. */
function parseModelProto(bytes) {
  const model = {
    pieces: [],
    trainer: {
      modelType: 1, treatWhitespaceAsSuffix: false, byteFallback: false,
      unkPiece: "<unk>", bosPiece: "<s>", eosPiece: "</s>", padPiece: "<pad>", unkSurface: null,
    },
    normalizer: null,
    denormalizer: null,
  };
  const top = new ProtoReader(bytes);
  for (let f = top.next(); f; f = top.next()) {
    if (f.field === 1) {
      expectWire(f, 2, "pieces");
      const piece = { piece: "", score: 0, type: PieceType.NORMAL };
      const r = top.sub(f.value);
      for (let g = r.next(); g; g = r.next()) {
        if (g.field === 1 && g.wire === 2) piece.piece = r.string(g.value);
        else if (g.field === 2 && g.wire === 5) piece.score = g.value;
        else if (g.field === 3 && g.wire === 0) piece.type = asInt32(g.value);
      }
      model.pieces.push(piece);
    } else if (f.field === 2) {
      expectWire(f, 2, "trainer_spec");
      parseTrainerSpec(top.sub(f.value), model.trainer);
    } else if (f.field === 3 || f.field === 5) {
      expectWire(f, 2, "normalizer_spec");
      const key = f.field === 3 ? "normalizer" : "denormalizer";
      model[key] = parseNormalizerSpec(top.sub(f.value), model[key]);
    }
  }
  model.normalizer = model.normalizer || parseNormalizerSpec(null, null);
  return model;
}

function parseTrainerSpec(r, t) {
  // The special ids are not read: like SentencePieceProcessor, they are found from the special pieces.
  const ints = { 3: "modelType" };
  const bools = { 24: "treatWhitespaceAsSuffix", 35: "byteFallback" };
  const strings = { 44: "unkSurface", 45: "unkPiece", 46: "bosPiece", 47: "eosPiece", 48: "padPiece" };
  for (let g = r.next(); g; g = r.next()) {
    if (g.wire === 0 && g.field in ints) t[ints[g.field]] = asInt32(g.value);
    else if (g.wire === 0 && g.field in bools) t[bools[g.field]] = asBool(g.value);
    else if (g.wire === 2 && g.field in strings) t[strings[g.field]] = r.string(g.value);
  }
}

function parseNormalizerSpec(r, previous) {
  const spec = previous || {
    name: "", charsmap: null, addDummyPrefix: true, removeExtraWhitespaces: true, escapeWhitespaces: true,
  };
  if (!r) return spec;
  const bools = { 3: "addDummyPrefix", 4: "removeExtraWhitespaces", 5: "escapeWhitespaces" };
  for (let g = r.next(); g; g = r.next()) {
    if (g.field === 1 && g.wire === 2) spec.name = r.string(g.value);
    else if (g.field === 2 && g.wire === 2) spec.charsmap = r.bytes.slice(g.value[0], g.value[1]);
    else if (g.wire === 0 && g.field in bools) spec[bools[g.field]] = asBool(g.value);
  }
  return spec;
}

// --- the precompiled character map ---------------------------------------------------------------

/** The normalizer's precompiled_charsmap: <trie size, uint32 little-endian><darts-clone double array>
 * <NUL-terminated replacement strings>, each trie key a UTF-8 byte string whose value is the offset of
 * its replacement (normalizer.cc DecodePrecompiledCharsMap). */
class CharsMap {
  constructor(blob) {
    if (blob.length <= 4) throw new Error("the precompiled character map is broken");
    const view = new DataView(blob.buffer, blob.byteOffset, blob.byteLength);
    const trieSize = view.getUint32(0, true);
    if (trieSize >= blob.length || trieSize % 4 !== 0) {
      throw new Error("the precompiled character map's trie exceeds the blob");
    }
    this.units = new Uint32Array(trieSize / 4);
    for (let i = 0; i < this.units.length; i++) this.units[i] = view.getUint32(4 + 4 * i, true);
    this.normalized = blob.subarray(4 + trieSize);
    this.replacements = new Map(); // value (offset) -> its replacement bytes
  }

  // darts-clone's DoubleArrayUnit accessors (uint32 arithmetic, hence the `>>> 0`).
  static hasLeaf(unit) { return ((unit >>> 8) & 1) === 1; }
  static value(unit) { return unit & 0x7fffffff; }
  static label(unit) { return (unit & 0x800000ff) >>> 0; }
  static offset(unit) { return ((unit >>> 10) << ((unit & (1 << 9)) >>> 6)) >>> 0; }

  /** The longest key that prefixes bytes[pos..end) as [length, replacement bytes], or null: darts-clone's
   * commonPrefixSearch, keeping the longest result as Normalizer::NormalizePrefix does. */
  longestMatch(bytes, pos, end) {
    const units = this.units;
    let node = CharsMap.offset(units[0]);
    let best = null;
    for (let i = pos; i < end; i++) {
      const c = bytes[i];
      node = (node ^ c) >>> 0;
      if (node >= units.length) break; // C++ would read past the array; no real key leads there
      const unit = units[node];
      if (CharsMap.label(unit) !== c) break;
      node = (node ^ CharsMap.offset(unit)) >>> 0;
      if (CharsMap.hasLeaf(unit)) {
        if (node >= units.length) break;
        best = [i + 1 - pos, CharsMap.value(units[node])];
      }
    }
    return best && [best[0], this.replacement(best[1])];
  }

  replacement(offset) {
    let bytes = this.replacements.get(offset);
    if (bytes === undefined) {
      let end = offset;
      while (end < this.normalized.length && this.normalized[end] !== 0) end++;
      bytes = this.normalized.slice(offset, end);
      this.replacements.set(offset, bytes);
    }
    return bytes;
  }
}

// --- helpers -------------------------------------------------------------------------------------

/** Code points of a string, each as a string (lone surrogates as U+FFFD, as UTF-8 encoding makes
 * them). */
function codePoints(text) {
  const out = [];
  for (const ch of text) {
    const c = ch.codePointAt(0);
    out.push(c >= 0xd800 && c <= 0xdfff ? "\ufffd" : ch);
  }
  return out;
}

/** The length in bytes of the UTF-8 character whose first byte is `b` (string_util::OneCharLen). */
function oneCharLen(b) {
  return [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4][b >> 4];
}

function utf8Length(text) {
  return utf8Encoder.encode(text).length;
}

/** A trie over code points, for longest-prefix matching of user-defined symbols and for the unigram
 * lattice (both are Darts tries over UTF-8 bytes in C++; valid UTF-8 keys only ever match whole
 * characters, so code points give the same matches). */
class Trie {
  constructor() {
    this.root = { children: new Map(), id: -1 };
  }

  add(key, id) {
    let node = this.root;
    for (const ch of key) {
      let child = node.children.get(ch);
      if (!child) {
        child = { children: new Map(), id: -1 };
        node.children.set(ch, child);
      }
      node = child;
    }
    node.id = id;
  }

  /** The number of characters of chars[pos..] the longest key spans, 0 when none does. */
  longestPrefix(chars, pos) {
    let node = this.root;
    let best = 0;
    for (let i = pos; i < chars.length; i++) {
      node = node.children.get(chars[i]);
      if (!node) break;
      if (node.id >= 0) best = i + 1 - pos;
    }
    return best;
  }
}

/** A binary max-heap under `less(a, b)` (std::priority_queue). */
class Heap {
  constructor(less) {
    this.less = less;
    this.items = [];
  }

  get size() { return this.items.length; }

  push(item) {
    const items = this.items;
    items.push(item);
    let i = items.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.less(items[parent], items[i])) break;
      [items[parent], items[i]] = [items[i], items[parent]];
      i = parent;
    }
  }

  pop() {
    const items = this.items;
    const top = items[0];
    const last = items.pop();
    if (items.length > 0) {
      items[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let largest = i;
        if (l < items.length && this.less(items[largest], items[l])) largest = l;
        if (r < items.length && this.less(items[largest], items[r])) largest = r;
        if (largest === i) break;
        [items[largest], items[i]] = [items[i], items[largest]];
        i = largest;
      }
    }
    return top;
  }
}

// --- the tokenizer -------------------------------------------------------------------------------

export class SentencePiece {
  /** A tokenizer from the bytes of a `.model` file (a serialized ModelProto). Throws an Error for a
   * model it cannot read or does not implement. */
  static fromBytes(bytes) {
    if (!(bytes instanceof Uint8Array)) bytes = new Uint8Array(bytes);
    let model;
    try {
      model = parseModelProto(bytes);
    } catch (error) {
      throw new Error(`not a valid SentencePiece model: ${error.message}`);
    }
    return new SentencePiece(model);
  }

  constructor(model) {
    const { pieces, trainer, normalizer, denormalizer } = model;
    this.modelType = MODEL_TYPES[trainer.modelType];
    if (!this.modelType) throw new Error(`unknown SentencePiece model type ${trainer.modelType}`);
    if (this.modelType === "word") {
      throw new Error('SentencePiece "word" models are not implemented here; use "bpe", "char" or "unigram"');
    }
    if (trainer.byteFallback || pieces.some((p) => p.type === PieceType.BYTE)) {
      throw new Error("SentencePiece byte fallback is not implemented here");
    }
    if (trainer.treatWhitespaceAsSuffix) {
      throw new Error("SentencePiece treat_whitespace_as_suffix is not implemented here");
    }
    if (denormalizer && denormalizer.charsmap && denormalizer.charsmap.length > 0) {
      throw new Error("SentencePiece denormalization (decode-side rules) is not implemented here");
    }
    this.normalizerSpec = normalizer;
    this.charsMap = normalizer.charsmap && normalizer.charsmap.length > 0
      ? new CharsMap(normalizer.charsmap) : null;
    this.unkSurface = trainer.unkSurface ?? DEFAULT_UNK_SURFACE;

    // model_interface.cc InitializePieces: NORMAL, USER_DEFINED and UNUSED pieces are what the models
    // match; CONTROL and UNKNOWN pieces are reserved (found by PieceToId, never matched in text).
    this.pieceList = pieces;
    this.normalPieces = new Map();
    this.reserved = new Map();
    this.userDefined = new Trie();
    let hasUserDefined = false;
    this.unknownId = -1; // the UNKNOWN piece: what PieceToId gives for anything else

    pieces.forEach((p, id) => {
      if (p.piece === "") throw new Error("not a valid SentencePiece model: a piece is empty");
      const normal = p.type === PieceType.NORMAL || p.type === PieceType.USER_DEFINED ||
        p.type === PieceType.UNUSED;
      const table = normal ? this.normalPieces : this.reserved;
      if (table.has(p.piece)) throw new Error(`not a valid SentencePiece model: ${p.piece} is defined twice`);
      table.set(p.piece, id);
      if (p.type === PieceType.USER_DEFINED) {
        this.userDefined.add(p.piece, id);
        hasUserDefined = true;
      }
      if (p.type === PieceType.UNKNOWN) {
        if (this.unknownId >= 0) throw new Error("not a valid SentencePiece model: two unknown pieces");
        this.unknownId = id;
      }
    });
    if (this.unknownId < 0) throw new Error("not a valid SentencePiece model: no unknown piece");
    if (!hasUserDefined) this.userDefined = null;

    // The special ids as SentencePieceProcessor reports them: the id of the named piece if it has the
    // right type, else -1.
    const special = (name, type) => {
      const id = this.pieceToId(name);
      return this.pieceList[id].type === type ? id : -1;
    };
    this.unkId = special(trainer.unkPiece, PieceType.UNKNOWN);
    this.bosId = special(trainer.bosPiece, PieceType.CONTROL);
    this.eosId = special(trainer.eosPiece, PieceType.CONTROL);
    this.padId = special(trainer.padPiece, PieceType.CONTROL);

    if (this.modelType === "unigram") this.initUnigram();
  }

  get vocabSize() { return this.pieceList.length; }

  /** The id of a piece, UNK's id when the piece is unknown (ModelInterface::PieceToId). */
  pieceToId(piece) {
    const reserved = this.reserved.get(piece);
    if (reserved !== undefined) return reserved;
    const id = this.normalPieces.get(piece);
    return id === undefined ? this.unknownId : id;
  }

  idToPiece(id) {
    this.checkId(id);
    return this.pieceList[id].piece;
  }

  pieces(ids) {
    return Array.from(ids, (id) => this.idToPiece(Number(id)));
  }

  checkId(id) {
    if (!Number.isInteger(id) || id < 0 || id >= this.pieceList.length) {
      throw new RangeError(`piece id ${id} is out of range 0..${this.pieceList.length - 1}`);
    }
  }

  isType(id, type) { return this.pieceList[id].type === type; }

  // --- normalization (normalizer.cc Normalizer::Normalize) ---------------------------------------

  /** The normalized text as an array of code points (strings). */
  normalize(text) {
    const spec = this.normalizerSpec;
    const chars = codePoints(text);
    if (chars.length === 0) return [];
    // UTF-8 bytes of each position, for the character map (a trie over bytes).
    const bytes = this.charsMap ? utf8Encoder.encode(chars.join("")) : null;
    let pos = 0; // position in chars
    let bytePos = 0; // the same position in bytes

    // NormalizePrefix: the next piece of normalized text and how much input it consumes.
    const prefix = () => {
      if (this.userDefined) {
        const n = this.userDefined.longestPrefix(chars, pos);
        if (n > 0) return [chars.slice(pos, pos + n), n];
      }
      if (this.charsMap) {
        const match = this.charsMap.longestMatch(bytes, bytePos, bytes.length);
        if (match) {
          // Advance over the characters whose bytes the key covers.
          let n = 0;
          let covered = 0;
          while (covered < match[0]) covered += utf8Length(chars[pos + n++]);
          if (covered !== match[0]) throw new Error("the character map matched part of a character");
          return [codePoints(utf8Decoder.decode(match[1])), n];
        }
      }
      return [[chars[pos]], 1];
    };
    const advance = (n) => {
      for (let i = 0; i < n; i++) {
        if (bytes) bytePos += oneCharLen(bytes[bytePos]);
        pos++;
      }
    };

    if (spec.removeExtraWhitespaces) {
      // Drops leading spaces.
      while (pos < chars.length) {
        const [piece, n] = prefix();
        if (!(piece.length === 1 && piece[0] === " ")) break;
        advance(n);
      }
    }
    if (pos >= chars.length) return [];

    const space = spec.escapeWhitespaces ? SPACE_SYMBOL : " ";
    const out = [];
    if (spec.addDummyPrefix) out.push(space);
    let isPrevSpace = spec.removeExtraWhitespaces;
    while (pos < chars.length) {
      const [piece, n] = prefix();
      let start = 0;
      // Drops the spaces a piece starts with after a piece that ended with one (squeezing runs).
      while (isPrevSpace && start < piece.length && piece[start] === " ") start++;
      if (start < piece.length) {
        for (let i = start; i < piece.length; i++) out.push(piece[i] === " " ? space : piece[i]);
        isPrevSpace = piece[piece.length - 1] === " ";
      }
      advance(n);
      if (!spec.removeExtraWhitespaces) isPrevSpace = false;
    }
    if (spec.removeExtraWhitespaces) {
      // Drops trailing spaces (escaped or not).
      while (out.length > 0 && out[out.length - 1] === space) out.pop();
    }
    return out;
  }

  // --- the models: normalized code points -> [piece, id] ---------------------------------------

  /** Splits normalized text into characters, each user-defined symbol as one (PrefixMatcher), marking
   * user-defined ones as frozen (BPE never merges them). */
  initialSymbols(chars) {
    const symbols = [];
    for (let pos = 0; pos < chars.length;) {
      const n = this.userDefined ? this.userDefined.longestPrefix(chars, pos) : 0;
      const length = n > 0 ? n : 1;
      symbols.push({ piece: chars.slice(pos, pos + length).join(""), freeze: n > 0 });
      pos += length;
    }
    return symbols;
  }

  encodeChar(chars) {
    return this.initialSymbols(chars).map(({ piece }) => [piece, this.pieceToId(piece)]);
  }

  encodeBpe(chars) {
    if (chars.length === 0) return [];
    const symbols = this.initialSymbols(chars);
    symbols.forEach((s, i) => {
      s.prev = i - 1;
      s.next = i + 1 < symbols.length ? i + 1 : -1;
    });
    // The best pair first: the highest score, then the leftmost (SymbolPairComparator).
    const agenda = new Heap((a, b) => a.score < b.score || (a.score === b.score && a.left > b.left));
    // Unused pieces the text was merged into, with the two symbols they came from, for resegmentation.
    const revMerge = new Map();

    const maybeAddPair = (left, right) => {
      if (left === -1 || right === -1 || symbols[left].freeze || symbols[right].freeze) return;
      const piece = symbols[left].piece + symbols[right].piece;
      const id = this.normalPieces.get(piece);
      if (id === undefined) return;
      agenda.push({ left, right, score: this.pieceList[id].score, size: piece.length });
      if (this.isType(id, PieceType.UNUSED)) revMerge.set(piece, [symbols[left].piece, symbols[right].piece]);
    };

    for (let i = 1; i < symbols.length; i++) maybeAddPair(i - 1, i);

    while (agenda.size > 0) {
      const top = agenda.pop();
      const left = symbols[top.left];
      const right = symbols[top.right];
      // A pair is stale once either side was merged into something else (its pieces only grow).
      if (left.piece === "" || right.piece === "" || left.piece.length + right.piece.length !== top.size) {
        continue;
      }
      left.piece += right.piece;
      left.next = right.next;
      if (right.next >= 0) symbols[right.next].prev = top.left;
      right.piece = "";
      maybeAddPair(left.prev, top.left);
      maybeAddPair(top.left, left.next);
    }

    const output = [];
    const resegment = (piece) => {
      const id = this.pieceToId(piece);
      const split = this.isType(id, PieceType.UNUSED) ? revMerge.get(piece) : undefined;
      if (split === undefined) {
        output.push([piece, id]);
        return;
      }
      resegment(split[0]);
      resegment(split[1]);
    };
    for (let i = 0; i !== -1; i = symbols[i].next) resegment(symbols[i].piece);
    return output;
  }

  initUnigram() {
    this.lattice = new Trie();
    for (const [piece, id] of this.normalPieces) this.lattice.add(piece, id);
    let minScore = FLT_MAX;
    let maxScore = FLT_MIN;
    for (const p of this.pieceList) {
      if (p.type === PieceType.NORMAL) {
        minScore = Math.min(minScore, p.score);
        maxScore = Math.max(maxScore, p.score);
      }
    }
    this.maxScore = maxScore;
    this.unkScore = f32(minScore - UNK_PENALTY);
    this.byteLengths = this.pieceList.map((p) => utf8Length(p.piece));
  }

  /** unigram_model.cc Model::EncodeOptimized: the best path ending at each position, in float32. */
  encodeUnigram(chars) {
    const size = chars.length;
    if (size === 0) return [];
    const best = Array.from({ length: size + 1 }, () => ({ id: -1, score: 0, startsAt: -1 }));
    for (let startsAt = 0; startsAt < size; startsAt++) {
      const scoreTillHere = best[startsAt].score;
      let hasSingleNode = false;
      let node = this.lattice.root;
      for (let end = startsAt + 1; end <= size; end++) {
        node = node.children.get(chars[end - 1]);
        if (!node) break;
        const id = node.id;
        if (id < 0 || this.isType(id, PieceType.UNUSED)) continue;
        const target = best[end];
        // A user-defined symbol gets a bonus so that it is always chosen: its length in bytes times the
        // largest score (a float product), less 0.1 in double precision.
        // The C++ expression is a double (the ternary's type), compared in double and stored as float.
        const score = this.isType(id, PieceType.USER_DEFINED)
          ? f32(this.byteLengths[id] * this.maxScore) - 0.1 : this.pieceList[id].score;
        const candidate = score + scoreTillHere;
        if (target.startsAt === -1 || candidate > target.score) {
          target.score = f32(candidate);
          target.startsAt = startsAt;
          target.id = id;
        }
        if (end === startsAt + 1) hasSingleNode = true;
      }
      if (!hasSingleNode) {
        const target = best[startsAt + 1];
        const candidate = f32(this.unkScore + scoreTillHere); // float + float
        if (target.startsAt === -1 || candidate > target.score) {
          target.score = candidate;
          target.startsAt = startsAt;
          target.id = this.unknownId;
        }
      }
    }
    const results = [];
    for (let end = size; end > 0;) {
      const node = best[end];
      results.push([chars.slice(node.startsAt, end).join(""), node.id]);
      end = node.startsAt;
    }
    return results.reverse();
  }

  // --- the public API --------------------------------------------------------------------------

  /** The ids of one text, no BOS/EOS added (sentencepiece's `encode(text, out_type=int)`). */
  encode(text) {
    const chars = this.normalize(String(text));
    const encoded = this.modelType === "bpe" ? this.encodeBpe(chars)
      : this.modelType === "char" ? this.encodeChar(chars) : this.encodeUnigram(chars);
    // PopulateSentencePieceText: a run of unknown pieces is merged into one.
    const ids = [];
    let prevUnk = false;
    for (const [, id] of encoded) {
      const unk = this.isType(id, PieceType.UNKNOWN);
      if (!(unk && prevUnk)) ids.push(id);
      prevUnk = unk;
    }
    return ids;
  }

  /** The encoder input as `serving/tokenizer.py`'s encode_sources builds it: each text's ids cut to
   * `maxSourceLength - 1`, then EOS, rows padded with PAD to the longest (at least 1).
   * Returns {ids: Int32Array (row-major, batch x longest), shape: [batch, longest], lengths}. */
  encodeSources(texts, maxSourceLength, { pad = this.padId, eos = this.eosId } = {}) {
    if (!Number.isInteger(maxSourceLength) || maxSourceLength < 1) {
      throw new RangeError(`maxSourceLength must be an integer >= 1, got ${maxSourceLength}`);
    }
    const rows = Array.from(texts, (text) => [...this.encode(text).slice(0, maxSourceLength - 1), eos]);
    const lengths = rows.map((row) => row.length);
    const longest = lengths.reduce((a, b) => Math.max(a, b), 1);
    const ids = new Int32Array(rows.length * longest).fill(pad);
    rows.forEach((row, i) => ids.set(row, i * longest));
    return { ids, shape: [rows.length, longest], lengths };
  }

  /** The ids of one generated row before its first EOS, without PAD and BOS (strip_special_ids). */
  outputIds(row, { pad = this.padId, bos = this.bosId, eos = this.eosId } = {}) {
    const ids = Array.from(row, Number);
    const end = ids.indexOf(eos);
    return (end >= 0 ? ids.slice(0, end) : ids).filter((id) => id !== pad && id !== bos);
  }

  /** The text of ids (sentencepiece's `decode`): control pieces are invisible, UNK is the model's
   * unk_surface, "▁" is a space, and the dummy prefix's space in front is removed. */
  decode(ids) {
    const spec = this.normalizerSpec;
    const stripsPrefix = spec.addDummyPrefix || spec.removeExtraWhitespaces;
    let text = "";
    let isBosWs = true; // still at the start, where a leading "▁" is the dummy prefix
    let bosWsSeen = false;
    for (const value of ids) {
      const id = Number(value);
      this.checkId(id);
      let piece = this.pieceList[id].piece;
      if (bosWsSeen || text !== "") isBosWs = false;
      bosWsSeen = false;
      if (this.isType(id, PieceType.CONTROL)) continue;
      if (this.isType(id, PieceType.UNKNOWN)) {
        text += this.unkSurface;
        continue;
      }
      if (isBosWs && stripsPrefix && piece.startsWith(SPACE_SYMBOL)) {
        piece = piece.slice(SPACE_SYMBOL.length);
        // With squeezed whitespace every leading "▁" goes, else only the first.
        bosWsSeen = !spec.removeExtraWhitespaces;
      }
      text += piece.replaceAll(SPACE_SYMBOL, " ");
    }
    return text;
  }
}

export default SentencePiece;
