"""`python -m serving EXPORT_DIR "text" ...`: generation from an export with onnxruntime alone.

Texts come from the arguments, or one per line from stdin. Each output is printed on its own line, in
input order; `--json` prints one JSON object per input instead (with `--tokens` / `--attention` extras).
`--stream` prints each output as the search makes it final (one input at a time), with `--json` one
object per new piece of text (`"delta"`) and a last one per input with `"done": true` and the whole output.
Errors (a missing or damaged export, bad options, empty input) are one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from serving.errors import ServingError
from serving.options import DecodingOptions
from serving.runtime import Runtime

__all__ = ["build_parser", "main"]


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {number}")
    return number


def add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by the CLI and the server: how to load the export."""
    parser.add_argument("export_dir", help="export directory (RUN/export, written by `python -m export`)")
    parser.add_argument("--provider", default="cpu",
                        help="onnxruntime execution provider: cpu, cuda, auto (cuda when available)")
    parser.add_argument("--threads", type=int, default=1,
                        help="onnxruntime intra-op threads (0: one per physical core; default 1)")
    parser.add_argument("--int8", action="store_true",
                        help="use the dynamic-int8 graphs (an export made with --quantize)")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="skip the sha256 check of the files against manifest.json")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m serving", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_runtime_arguments(parser)
    parser.add_argument("text", nargs="*", help="input texts (default: one per line from stdin)")
    DecodingOptions.add_arguments(parser)
    parser.add_argument("--batch-size", type=_positive_int, default=64, help="texts per model call")
    parser.add_argument("--json", action="store_true", help="one JSON object per input")
    parser.add_argument("--stream", action="store_true",
                        help="print text as it is generated (greedy, sampling: every token; beam: the "
                             "part all hypotheses share)")
    parser.add_argument("--tokens", action="store_true", help="with --json: the pieces and ids")
    parser.add_argument("--attention", action="store_true",
                        help="with --json: cross-attention (last layer, mean over heads), tokens x source")
    return parser


def _read_texts(args: argparse.Namespace) -> list[str]:
    if args.text:
        texts, where = args.text, "argument"
    elif sys.stdin is None or sys.stdin.isatty():
        raise ServingError("no input text; pass texts as arguments or one per line on stdin")
    else:
        texts, where = [line.rstrip("\r\n") for line in sys.stdin], "line"
    if not texts:
        raise ServingError("no input text; pass texts as arguments or one per line on stdin")
    for i, text in enumerate(texts, 1):
        if not text.strip():
            raise ServingError(f"input {where} {i} is empty; give non-empty text")
    return texts


def main(argv: list[str] | None = None) -> int:
    # Intermixed: options may come after the texts (`python -m serving EXPORT "9/27/94" --method beam`).
    args = build_parser().parse_intermixed_args(argv)
    try:
        options = DecodingOptions.from_args(args)
        options.validate()
        texts = _read_texts(args)
        runtime = Runtime(args.export_dir, provider=args.provider, intra_op_threads=args.threads,
                          verify=args.verify, int8=args.int8)
        runtime.check_texts(texts)
        if args.stream:
            for index, text in enumerate(texts):
                _print_stream(runtime.generate_stream([text], options, return_attention=args.attention,
                                                      seeds=_seeds(options, index)), text, args)
            return 0
        generations = runtime.generate(texts, options, return_attention=args.attention,
                                       batch_size=args.batch_size)
    except ServingError as e:
        print(f"error: {e.for_flags()}", file=sys.stderr)
        return 2
    for text, generation in zip(texts, generations, strict=True):
        if args.json:
            record = {"input": text, **generation.to_json(tokens=args.tokens, attention=args.attention)}
            print(json.dumps(record, ensure_ascii=False))
        else:
            print(generation.text)
    return 0


def _seeds(options: DecodingOptions, index: int) -> list | None:
    # The sample text `index` gets without --stream (see `Runtime.generate`).
    return [(options.seed, index)] if options.method == "sample" and options.seed is not None else None


def _print_stream(events, text: str, args: argparse.Namespace) -> None:
    for event in events:
        if args.json:
            record = {"input": text, "delta": event.text}
            if event.done:
                record.update(done=True, **event.generation.to_json(tokens=args.tokens, attention=args.attention))
            print(json.dumps(record, ensure_ascii=False), flush=True)
        else:
            print(event.text, end="\n" if event.done else "", flush=True)
