"""Command line: `python -m keras_nlp_week4 {train,evaluate,generate,plot,compare} ...`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def _train_config(args: argparse.Namespace):
    from keras_nlp_week4.training.trainer import TrainConfig

    fields = TrainConfig.__dataclass_fields__
    return TrainConfig(**{k: v for k, v in vars(args).items() if k in fields and v is not None})


def _train(args: argparse.Namespace) -> None:
    from keras_nlp_week4.training.trainer import train

    run_dir = train(_train_config(args))
    print(f"Run written to {run_dir}")


def _compare(args: argparse.Namespace) -> None:
    from keras_nlp_week4.compare import compare

    models = None if args.models is None else [
        m.strip() for m in args.models.replace(",", " ").split() if m.strip()]
    compare(_train_config(args), models, out_dir=args.out, transformer_preset=args.transformer_preset,
            rnn_preset=args.rnn_preset)


def _plot(args: argparse.Namespace) -> None:
    from keras_nlp_week4.plots import plot_attention, plot_training_curves
    from keras_nlp_week4.runs import latest_run, load_run

    run_dir = Path(args.run) if args.run else latest_run()
    out = Path(args.out) if args.out else run_dir / "plots"
    print(f"Training curves: {plot_training_curves(run_dir, out / 'training_curves.png')}")
    run = load_run(run_dir, compile=False)
    text = args.text
    if text is None:
        text = run.pairs("test")[0][0]
        print(f"No --text given; using the first test source: {text!r}")
    if not run.model.has_attention:
        print(f"note: model {run.config.model!r} has no attention; only the training curves "
              "were drawn")
        return
    print(f"Attention: {plot_attention(run, text, out / 'attention.png')}")


def _evaluate(args: argparse.Namespace) -> None:
    from keras_nlp_week4.evaluation import evaluate_run
    from keras_nlp_week4.runs import latest_run

    evaluate_run(Path(args.run) if args.run else latest_run(), beam_size=args.beam_size)


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    """The data options' flags, from their one declaration (`DataSources`). Unset flags stay None, so
    the config's defaults apply."""
    from dataclasses import fields

    from keras_nlp_week4.data.readers import DataSources

    for f in fields(DataSources):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            parser.add_argument(flag, dest=f.name, action="store_true", default=None, help=f.metadata["help"])
        else:
            parser.add_argument(flag, dest=f.name, default=None, help=f.metadata["help"])


def _generate(args: argparse.Namespace) -> None:
    from keras_nlp_week4.errors import UserError
    from keras_nlp_week4.evaluation import decode_texts
    from keras_nlp_week4.runs import latest_run, load_run
    from serving.options import DecodingOptions

    texts = args.text or [line.rstrip("\n") for line in sys.stdin]
    if not texts or any(not t.strip() for t in texts):
        raise UserError("give non-empty input text (as arguments or one per line on stdin)")
    options = DecodingOptions.from_args(args)
    options.validate()  # before loading a model: a bad option costs no time
    run = load_run(Path(args.run) if args.run else latest_run(), compile=False)
    options.validate(max_new_tokens_limit=run.config.max_target_length)
    outputs = decode_texts(run, texts, options.method, max_new_tokens=options.max_new_tokens,
                           **options.search_kwargs(), **options.rule_kwargs())
    for text, output in zip(texts, outputs, strict=True):
        print(f"{text}\t{output}")


def build_parser() -> argparse.ArgumentParser:
    from keras_nlp_week4.models.registry import MODEL_NAMES
    from keras_nlp_week4.tasks import TASKS
    from keras_nlp_week4.training.distribute import PRECISIONS, STRATEGIES
    from serving.options import DecodingOptions

    parser = argparse.ArgumentParser(prog="python -m keras_nlp_week4", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a model with model.fit and evaluate it")
    train.add_argument("--task", default="dates", help=f"one of: {', '.join(TASKS)}")
    train.add_argument("--model", default="transformer", help=f"one of: {', '.join(MODEL_NAMES)}")
    train.add_argument("--preset", help="model size (tiny, small, medium, base, ...)")
    train.add_argument("--out", help="run directory (default: artifacts/<task>-<model>)")
    _add_data_options(train)
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch-size", dest="batch_size", type=int)
    train.add_argument("--learning-rate", dest="learning_rate", type=float, help="peak learning rate")
    train.add_argument("--warmup-steps", dest="warmup_steps", type=int)
    train.add_argument("--label-smoothing", dest="label_smoothing", type=float)
    train.add_argument("--dropout", type=float)
    train.add_argument("--teacher-forcing-ratio", dest="teacher_forcing_ratio", type=float,
                       help="RNN models: probability of feeding the ground-truth token (1.0 = always)")
    train.add_argument("--vocab-size", dest="vocab_size", type=int)
    train.add_argument("--max-source-length", dest="max_source_length", type=int)
    train.add_argument("--max-target-length", dest="max_target_length", type=int)
    train.add_argument("--patience", type=int, help="early-stopping patience in epochs")
    train.add_argument("--max-train-examples", dest="max_train_examples", type=int)
    train.add_argument("--time-budget-minutes", dest="time_budget_minutes", type=float,
                       help="stop before an epoch that would end past this many minutes of training "
                            "(default and 0: none; training stops on epochs and early stopping)")
    train.add_argument("--seed", type=int)
    train.add_argument("--verbose", type=int, help="Keras fit verbosity (0, 1, 2)")
    train.add_argument("--strategy", choices=STRATEGIES,
                       help="tf.distribute strategy: mirrored = all local GPUs, multi-worker = the hosts "
                            "in TF_CONFIG; --batch-size is then the global batch")
    train.add_argument("--precision", choices=PRECISIONS,
                       help="mixed precision keeps the output layer and the loss in float32")
    train.add_argument("--jit", action="store_true", default=None, help="compile train steps with XLA")
    train.set_defaults(func=_train)

    evaluate = sub.add_parser("evaluate", help="evaluate a trained run, write metrics.json")
    evaluate.add_argument("run", nargs="?", help="run directory (default: the last trained)")
    evaluate.add_argument("--beam-size", dest="beam_size", type=int,
                          help="beam width for BLEU/chrF with beam search (0: greedy only; default: "
                               "the task's)")
    evaluate.set_defaults(func=_evaluate)

    gen = sub.add_parser("generate", help="generate outputs with the Keras model")
    gen.add_argument("text", nargs="*", help="input texts (default: lines from stdin)")
    gen.add_argument("--run", help="run directory (default: the last trained)")
    DecodingOptions.add_arguments(gen)
    gen.set_defaults(func=_generate)

    plot = sub.add_parser("plot", help="draw attention heatmaps and training curves (PNG)")
    plot.add_argument("run", nargs="?", help="run directory (default: the last trained)")
    plot.add_argument("--text", help="input whose attention is drawn (default: the first test source)")
    plot.add_argument("--out", help="folder for the PNGs (default: RUN/plots)")
    plot.set_defaults(func=_plot)

    from keras_nlp_week4.compare import DEFAULT_MODELS

    comp = sub.add_parser("compare", help="train and evaluate several models on the same splits; "
                                          "write a Markdown/JSON table")
    comp.add_argument("--task", default="translate", help=f"one of: {', '.join(TASKS)}")
    comp.add_argument("--models", help="comma-separated model names (default: the task's anchored "
                                        f"models, else {','.join(DEFAULT_MODELS)})")
    comp.add_argument("--out", help="output folder (default: artifacts/compare-<task>)")
    comp.add_argument("--transformer-preset", dest="transformer_preset")
    comp.add_argument("--rnn-preset", dest="rnn_preset")
    _add_data_options(comp)
    for flag, kind in (("--epochs", int), ("--batch-size", int), ("--vocab-size", int),
                       ("--max-train-examples", int), ("--seed", int), ("--patience", int),
                       ("--verbose", int), ("--time-budget-minutes", float)):
        comp.add_argument(flag, dest=flag[2:].replace("-", "_"), type=kind)
    comp.set_defaults(func=_compare)
    return parser


def main(argv: list[str] | None = None) -> int:
    from keras_nlp_week4.errors import UserError
    from keras_nlp_week4.quiet import import_tensorflow_quietly
    from serving.errors import ServingError

    import_tensorflow_quietly()
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (UserError, ServingError) as e:
        print(f"error: {e.for_flags()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume from the last finished epoch",
              file=sys.stderr)
        return 130
    return 0
