"""`python -m export [RUN] [--quantize]`: SavedModel + ONNX export of a trained run, validated.

RUN defaults to the most recently trained run under artifacts/. The export lands in RUN/export/ only if
parity validation passes (see `export.validate`); exit status 1 when it does not, 2 for a missing or
damaged run.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, nargs="?", default=None,
                        help="trained run directory (default: the latest under artifacts/)")
    parser.add_argument("--quantize", action="store_true",
                        help="also write dynamic int8 graphs (onnx/int8/) and report their quality")
    parser.add_argument("--no-validate", action="store_true",
                        help="skip parity validation (run `python -m export.validate RUN` later)")
    parser.add_argument("--max-test-examples", type=int, default=None,
                        help="greedy reference on the first N test sequences only (default: all)")
    parser.add_argument("--providers", nargs="+", default=None,
                        help="onnxruntime providers to validate (default: CPU, and CUDA when offered)")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: auto)")
    parser.add_argument("--fused-attention", action="store_true",
                        help="a Transformer's decoder step with onnxruntime's fused decoding attention "
                             "(com.microsoft.DecoderMaskedMultiHeadAttention; onnxruntime >= 1.32 only, not "
                             "onnxruntime-node/-web 1.30); by default standard ONNX operators only")
    parser.add_argument("--target", action="append", choices=("triton", "tfserving", "ctranslate2"),
                        default=[],
                        help="also lay the export out for Triton (RUN/triton/) or TensorFlow Serving "
                             "(RUN/tfserving/), or convert a Transformer run to CTranslate2 "
                             "(RUN/ctranslate2/, validated against Keras); may be repeated")
    return parser


def main(argv: list[str] | None = None) -> int:
    from keras_nlp_week4.errors import UserError
    from keras_nlp_week4.quiet import import_tensorflow_quietly
    from serving.errors import ServingError

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.fused_attention and "triton" in args.target:
        # Triton's onnxruntime backend may predate 1.32, which computes the fused step wrongly.
        parser.error("--fused-attention cannot go with --target triton; export without --fused-attention")
    import_tensorflow_quietly()
    from export.exporter import ExportFailed, export_run
    from keras_nlp_week4.runs import latest_run

    try:
        run_dir = args.run if args.run is not None else latest_run()
        if "ctranslate2" in args.target:
            from export.ctranslate2_target import check_convertible

            check_convertible(run_dir)  # before the ONNX export, not after it
        export_run(run_dir, quantize=args.quantize, validate=not args.no_validate,
                   max_test_examples=args.max_test_examples, providers=args.providers,
                   threads=args.threads, fused_attention=args.fused_attention)
        from export.serving_layouts import write_target

        for target in args.target:
            if target == "ctranslate2":
                from export.ctranslate2_target import write_ctranslate2

                print(f"{target}: {write_ctranslate2(run_dir, threads=args.threads)}")
            else:
                print(f"{target}: {write_target(target, run_dir)}")
    except ExportFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (UserError, ServingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
