"""Trains any model on any task with `model.fit` and writes a self-contained run directory.

A run directory (default `artifacts/<task>-<model>/`) holds:
    model.keras          the best model (lowest validation loss)
    tokenizer.model      the sentencepiece model the data was tokenized with
    config.json          everything needed to rebuild, evaluate and export the run
    validation.tsv, test.tsv   the held-out splits (source \t target)
    training_log.csv     one row per epoch (Keras CSVLogger)
    plots/training_curves.png  loss and accuracy per epoch, train vs validation (from training_log.csv)
    logs/                TensorBoard event files
    metrics.json         val_loss, test figures (perplexity, BLEU/chrF, exact match), training time
    samples.json         outputs for the task's sample inputs (greedy and sampled)
    backup/              only while training: the state a killed run resumes from
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import keras
import numpy as np

from keras_nlp_week4.data.pipeline import (
    EpochOrder,
    length_buckets,
    make_dataset,
    remainder_share,
    token_lengths,
)
from keras_nlp_week4.data.readers import DataSources
from keras_nlp_week4.data.splits import DatasetSplits
from keras_nlp_week4.data.tokenizer import (
    PAD_ID,
    SPECIAL_IDS,
    Tokenizer,
    check_tokenizer_parity,
    train_sentencepiece,
)
from keras_nlp_week4.errors import UserError
from keras_nlp_week4.evaluation import evaluate_run
from keras_nlp_week4.models.registry import build_model, model_family
from keras_nlp_week4.plots import plot_training_curves
from keras_nlp_week4.run_files import RunConfig, TrainSettings
from keras_nlp_week4.runs import write_pairs
from keras_nlp_week4.tasks import get_task
from keras_nlp_week4.training.distribute import (
    cluster_role,
    make_strategy,
    set_precision,
    shard_by_data,
)
from keras_nlp_week4.training.losses import MaskedAccuracy, MaskedSparseCrossEntropy
from keras_nlp_week4.training.progress import TimeBudget, ValidationBLEU, logged_minutes
from keras_nlp_week4.training.resume import EpochRandomness, ResumableBackup, finished_epochs
from keras_nlp_week4.training.schedule import TransformerSchedule
from serving.errors import flag_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig(DataSources):
    """Settings of one training run; `None` means "the task's default". The data options (`data`, `src`,
    `tgt`, the held-out files, `reverse`, `encoding`) are `DataSources`'."""

    task: str = "dates"
    model: str = "transformer"
    preset: str | None = None
    out: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None  # peak learning rate
    warmup_steps: int | None = None
    label_smoothing: float = 0.1
    dropout: float | None = None
    teacher_forcing_ratio: float = 1.0
    vocab_size: int | None = None
    max_source_length: int | None = None
    max_target_length: int | None = None
    patience: int | None = None
    max_train_examples: int | None = None
    time_budget_minutes: float | None = None  # of model.fit; the task's default, 0: none
    seed: int = 0
    verbose: int = 2
    # Scaling out (see training/distribute.py): batch_size is the global batch over all replicas.
    strategy: str = "default"
    precision: str = "float32"
    jit: bool = False


def default_run_dir(task: str, model: str) -> Path:
    return Path("artifacts") / f"{task}-{model}"


def resolve_settings(config: TrainConfig) -> TrainSettings:
    """Fills every `None` with the task's default; returns the effective settings (checked)."""
    task = get_task(config.task)
    family = model_family(config.model)
    values = asdict(config)
    task_defaults = {"preset": task.transformer_preset if family == "transformer" else task.rnn_preset,
                     **vars(task), **task.family_defaults.get(family, {}),
                     **task.family_defaults.get(config.model, {})}
    defaults = {
        "learning_rate": task_defaults["peak_learning_rate"],
        **{key: task_defaults[key] for key in ("preset", "epochs", "batch_size", "warmup_steps", "vocab_size",
                                               "max_source_length", "max_target_length", "patience",
                                               "max_train_examples", "dropout", "time_budget_minutes")},
    }
    for key, value in defaults.items():
        if values[key] is None:
            values[key] = value
    if values["time_budget_minutes"] == 0:
        values["time_budget_minutes"] = None
    values["out"] = str(Path(config.out) if config.out else default_run_dir(config.task, config.model))
    settings = TrainSettings(**values, family=family)
    check_settings(settings)
    return settings


# Length-bucketed training drops each bucket's partial batch when that leaves out at most this share.
MAX_DROPPED_SHARE = 0.1

# (name, smallest allowed, largest allowed, whether the largest is excluded); None: no bound.
_SETTING_RANGES = (
    ("epochs", 1, None, False), ("batch_size", 1, None, False), ("warmup_steps", 0, None, False),
    ("vocab_size", 5, None, False), ("max_source_length", 2, None, False),
    ("max_target_length", 2, None, False), ("patience", 0, None, False),
    ("max_train_examples", 1, None, False), ("time_budget_minutes", 0.0, None, False),
    ("label_smoothing", 0.0, 1.0, True),
    ("dropout", 0.0, 1.0, True), ("teacher_forcing_ratio", 0.0, 1.0, False),
)


def check_settings(settings: TrainSettings) -> None:
    """Raises `UserError` naming the first setting out of its range, before anything is written."""
    rate = settings.learning_rate
    if not (isinstance(rate, int | float) and np.isfinite(rate) and rate > 0):
        raise UserError(f"learning_rate must be a number > 0, got {rate}")
    for name, low, high, high_excluded in _SETTING_RANGES:
        value = getattr(settings, name)
        if value is None:
            continue  # the task's or the model's default
        too_high = high is not None and (value >= high if high_excluded else value > high)
        if not np.isfinite(value) or value < low or too_high:
            bound = f"in [{low}, {high}{')' if high_excluded else ']'}" if high is not None else f">= {low}"
            raise UserError(f"{name} must be {bound}, got {value}")


# Recorded in config.json's `train` but not what defines the training: verbosity changes what is
# printed, the replica count is added by `train` from the strategy, it is not a setting, and the output
# folder is where the run went (a finished run moved into a comparison's folder is the same run).
_NOT_TRAINING_SETTINGS = ("verbose", "num_replicas", "out")


def same_training(recorded: TrainSettings, settings: TrainSettings) -> bool:
    """True when a run's recorded settings (`RunConfig.train`) train what `settings` (`resolve_settings`)
    do."""
    return not training_differences(recorded, settings)


def training_differences(recorded: TrainSettings, settings: TrainSettings) -> list[str]:
    """The settings (as `--flag recorded -> requested`) in which `settings` train otherwise than `recorded`."""
    old, new = recorded.to_json(), settings.to_json()
    return [f"{flag_name(k)} {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
            if k not in _NOT_TRAINING_SETTINGS and old.get(k) != new.get(k)]


def _check_resumable(run_dir: Path, settings: TrainSettings) -> None:
    """Refuses (before anything is written) to resume an interrupted run with other settings: its backup
    holds weights, optimizer state and epoch counter of the recorded ones, and `write_run` would overwrite
    the record."""
    recorded = RunConfig.read(run_dir).train
    differences = training_differences(recorded, settings)
    if differences:
        raise UserError(f"{run_dir} holds an interrupted run trained with other settings "
                        f"({'; '.join(differences)}); rerun its own command to resume it, or give another --out")


def _optimizer(settings: TrainSettings, model) -> keras.optimizers.Optimizer:
    width = getattr(model, "d_model", None) or model.decoder_units
    warmup = max(1, settings.warmup_steps)
    # Scale the paper's curve so its peak (at step == warmup) is the requested learning rate.
    scale = settings.learning_rate * (width * warmup) ** 0.5
    schedule = TransformerSchedule(d_model=width, warmup_steps=warmup, scale=scale)
    if settings.family == "transformer":
        return keras.optimizers.Adam(schedule, beta_1=0.9, beta_2=0.98, epsilon=1e-9)
    # RNNs: the same warm-up/decay, plus gradient clipping against exploding gradients through time.
    return keras.optimizers.Adam(schedule, clipnorm=1.0)


def compile_model(model, settings: TrainSettings) -> None:
    # Under mixed_float16 Keras wraps the optimizer in a LossScaleOptimizer itself.
    model.compile(
        optimizer=_optimizer(settings, model),
        loss=MaskedSparseCrossEntropy(label_smoothing=settings.label_smoothing, pad_id=PAD_ID),
        metrics=[MaskedAccuracy(pad_id=PAD_ID)],
        jit_compile=True if settings.jit else "auto",
    )


@dataclass
class PreparedData:
    """The splits and the tokenizer of a run, ready before anything is written."""

    splits: DatasetSplits
    train_pairs: list
    tokenizer: Tokenizer
    scratch: tempfile.TemporaryDirectory  # holds a newly learned tokenizer until the run directory exists
    lengths: tuple  # `pipeline.token_lengths` of the training pairs, measured once


def prepare_data(settings: TrainSettings, run_dir: Path, resuming: bool) -> PreparedData:
    """Step 1: the task's splits and the tokenizer (learned from the training split, or the resumed run's).

    Raises `UserError` for missing or unusable data; writes nothing to `run_dir`."""
    task = get_task(settings.task)
    splits = task.load_splits(DataSources.of(settings), settings.seed)
    train_pairs = list(splits.train)
    if settings.max_train_examples:
        train_pairs = train_pairs[: settings.max_train_examples]
    for name, pairs in (("training", train_pairs), ("validation", splits.validation),
                        ("test", splits.test)):
        if not pairs:
            raise UserError(f"the {name} split of task {settings.task!r} is empty; give more data")

    scratch = tempfile.TemporaryDirectory(prefix="tokenizer-")
    tokenizer_path = run_dir / "tokenizer.model"
    if not (resuming and tokenizer_path.exists()):
        # The vocabulary is learned from the training split only, so held-out text stays unseen.
        texts = [s for pair in train_pairs for s in pair]
        tokenizer_path = train_sentencepiece(texts, Path(scratch.name) / "tokenizer.model",
                                             vocab_size=settings.vocab_size, model_type=task.tokenizer_type,
                                             squeeze_whitespace=task.squeeze_whitespace)
    tokenizer = Tokenizer(tokenizer_path)
    if task.tokenizer_type != "char":
        # Training tokenizes in tf.data (tensorflow-text), evaluation in Python (sentencepiece): they must agree.
        sample = [s for pair in train_pairs[:12000] for s in pair]  # some seconds per 20,000 texts
        mismatches = check_tokenizer_parity(tokenizer, sample)
        if mismatches:
            log.warning("warning: tensorflow-text and sentencepiece tokenize %d of %d training texts "
                        "differently (e.g. %r)", len(mismatches), len(sample), sample[mismatches[0]])
    lengths = token_lengths(train_pairs, tokenizer)
    _warn_if_cut(lengths, settings)
    return PreparedData(splits, train_pairs, tokenizer, scratch, lengths)


def make_datasets(data: PreparedData, settings: TrainSettings, task, order: EpochOrder) -> tuple:
    """Step 1b: the training and validation `tf.data` datasets of the recipe, `(train, validation)`.

    With length bucketing (`task.bucket_by_length`), bucketing flushes every bucket's partial batch at the
    end of the input: a run of small, same-length batches as the epoch's last steps, each a full-size
    optimizer step on a few examples, which moved validation BLEU by several points from one epoch to the
    next. Training drops them (a different few examples each epoch, since the order changes) unless that
    would leave out more than `MAX_DROPPED_SHARE` of the split (small data); validation keeps every
    example."""
    lengths = dict(max_source_length=settings.max_source_length,
                   max_target_length=settings.max_target_length)
    batch_size = settings.batch_size
    buckets = length_buckets(data.lengths, **lengths) if task.bucket_by_length else None
    drop_partial = buckets is not None and remainder_share(
        data.lengths, buckets, batch_size, **lengths) <= MAX_DROPPED_SHARE
    train = make_dataset(data.train_pairs, data.tokenizer, batch_size, order=order,
                         bucket_boundaries=buckets, drop_remainder=drop_partial, **lengths)
    validation = make_dataset(data.splits.validation, data.tokenizer, batch_size, bucket_boundaries=buckets,
                              **lengths)
    return train, validation


def _warn_if_cut(lengths: tuple, settings: TrainSettings) -> None:
    """Warns when training pairs (`pipeline.token_lengths`) are longer than the maximum lengths (the
    pipeline cuts them), so a recipe on new data says which flag to raise."""
    for side_lengths, side, name in zip(lengths, ("source", "target"), ("max_source_length", "max_target_length"),
                                        strict=True):
        cut = int((side_lengths > getattr(settings, name)).sum())
        if cut:
            log.warning("warning: %d of %d training %ss are longer than %s=%d tokens (the longest: %d) and "
                        "are cut; raise %s to keep them whole", cut, len(side_lengths), side, name,
                        getattr(settings, name), int(side_lengths.max()), flag_name(name))


def build_training_model(settings: TrainSettings, vocab_size: int, strategy):
    """Step 2: the model, built and compiled under the strategy."""
    overrides = {}
    if settings.dropout is not None:
        overrides["dropout"] = settings.dropout
    if settings.family == "rnn":
        overrides.update(teacher_forcing_ratio=settings.teacher_forcing_ratio, seed=settings.seed)
    with strategy.scope():
        model = build_model(settings.model, vocab_size, preset=settings.preset,
                            max_source_length=settings.max_source_length, **overrides)
        compile_model(model, settings)
        model.build()
    return model


def write_run(run_dir: Path, settings: TrainSettings, data: PreparedData, model) -> None:
    """Step 3, the first write: the held-out splits, the tokenizer and `config.json` (`RunConfig`)."""
    task = get_task(settings.task)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_pairs(run_dir / "validation.tsv", data.splits.validation)
    write_pairs(run_dir / "test.tsv", data.splits.test)
    if data.tokenizer.model_path != run_dir / "tokenizer.model":
        shutil.copyfile(data.tokenizer.model_path, run_dir / "tokenizer.model")
        data.tokenizer = Tokenizer(run_dir / "tokenizer.model")
    data.scratch.cleanup()
    RunConfig(
        task=settings.task,
        model=settings.model,
        family=settings.family,
        preset=settings.preset,
        model_class=type(model).__name__,
        model_config=model.get_config(),
        num_parameters=int(model.count_params()),
        tokenizer="tokenizer.model",
        tokenizer_type=task.tokenizer_type,
        vocab_size=data.tokenizer.vocab_size,
        special_ids=dict(SPECIAL_IDS),
        max_source_length=settings.max_source_length,
        max_target_length=settings.max_target_length,
        exact_match=task.exact_match,
        splits={"train": len(data.train_pairs), "validation": len(data.splits.validation),
                "test": len(data.splits.test)},
        train=settings,
        versions={"keras": keras.__version__, "tensorflow": _tf_version(), "numpy": np.__version__},
    ).write(run_dir)


def make_callbacks(run_dir: Path, settings: TrainSettings, order: EpochOrder, resuming: bool,
                   validation_bleu: ValidationBLEU | None = None, start_minutes: float = 0.0) -> list:
    """Step 4: the clock and the time budget, validation BLEU (when given: it then picks the kept model
    and stops training), best checkpoint, early stopping, logs, and the backup a killed run resumes from.
    `start_minutes`: minutes a resumed run trained before (its clock starts there)."""
    monitor = dict(monitor="val_bleu", mode="max") if validation_bleu else dict(monitor="val_loss", mode="min")
    checkpoint = keras.callbacks.ModelCheckpoint(str(run_dir / "model.keras"), save_best_only=True, **monitor)
    early_stopping = keras.callbacks.EarlyStopping(patience=settings.patience, restore_best_weights=True,
                                                   **monitor)
    return [
        EpochRandomness(order),
        *([validation_bleu] if validation_bleu else []),  # before the checkpoint and the logger: they read it
        TimeBudget(settings.time_budget_minutes, start_minutes, early_stopping),  # its minutes include the BLEU's
        checkpoint,
        early_stopping,
        keras.callbacks.TensorBoard(str(run_dir / "logs"), profile_batch=0),
        keras.callbacks.CSVLogger(str(run_dir / "training_log.csv"), append=resuming),
        # Last: it backs up what the callbacks above have just updated (see training/resume.py).
        ResumableBackup(run_dir / "backup", early_stopping, checkpoint),
    ]


def train(config: TrainConfig) -> Path:
    """Trains, keeps the best model, evaluates it, and returns the run directory.

    The steps: resolve the settings, prepare the data (`prepare_data`), build the model
    (`build_training_model`), write the run (`write_run`), fit with the callbacks (`make_callbacks`),
    evaluate (`evaluation.evaluate_run`) and draw the curves. Everything that can refuse the command runs
    before the first write. Re-running the same command after the process was killed resumes from the
    last finished epoch, to the same weights.
    """
    task = get_task(config.task)
    role = cluster_role() if config.strategy == "multi-worker" else cluster_role({})
    set_precision(config.precision)
    strategy = make_strategy(config.strategy)
    settings = replace(resolve_settings(config), num_replicas=strategy.num_replicas_in_sync)
    chief_dir = Path(settings.out)
    # Every worker runs the same fit; only the chief writes the run directory. The others keep their
    # (identical) checkpoints in a scratch folder beside it, which resuming needs and success removes.
    run_dir = chief_dir if role.is_chief else chief_dir.parent / f".{chief_dir.name}-worker-{role.task_index}"
    backup_dir = run_dir / "backup"
    resuming = backup_dir.exists() and any(backup_dir.iterdir())
    if resuming:
        _check_resumable(run_dir, settings)
    keras.utils.set_random_seed(config.seed)

    data = prepare_data(settings, run_dir, resuming)
    order = EpochOrder(config.seed)
    train_ds, val_ds = (shard_by_data(ds) for ds in make_datasets(data, settings, task, order))
    model = build_training_model(settings, data.tokenizer.vocab_size, strategy)
    write_run(run_dir, settings, data, model)

    validation_bleu = None
    if task.validation_bleu_examples:
        validation_bleu = ValidationBLEU(data.splits.validation, data.tokenizer,
                                         special_ids=SPECIAL_IDS,
                                         max_examples=task.validation_bleu_examples,
                                         max_source_length=settings.max_source_length,
                                         max_target_length=settings.max_target_length)
    # A resumed run's clock, and its recorded training time, include the epochs before the interruption.
    start_minutes = logged_minutes(run_dir / "training_log.csv") if resuming else 0.0
    callbacks = make_callbacks(run_dir, settings, order, resuming, validation_bleu, start_minutes)
    if resuming:
        print(f"Resuming the interrupted run in {run_dir} after its last finished epoch "
              f"({finished_epochs(backup_dir)}).")
    started = time.perf_counter()
    model.fit(train_ds, validation_data=val_ds, epochs=settings.epochs, callbacks=callbacks,
              shuffle=False, verbose=config.verbose)  # the order is the dataset's own (EpochOrder)
    training_seconds = 60.0 * start_minutes + time.perf_counter() - started
    if not role.is_chief:
        shutil.rmtree(run_dir, ignore_errors=True)
        return chief_dir

    evaluate_run(run_dir, training_seconds=training_seconds, beam_size=task.evaluation_beam_size)
    plot_training_curves(run_dir)
    return run_dir


def _tf_version() -> str:
    import tensorflow as tf

    return tf.__version__
