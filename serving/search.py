"""Decoding searches over any step function, in numpy alone (no TensorFlow, no Keras).

`SEARCHES` maps each method name to its search. Their options are named, defaulted and range-checked
by `serving.options.DecodingOptions`, once; the searches themselves assume valid values (sampling's
neutral defaults, temperature 1 and no top-k/top-p cut, mean "no change").

A step function feeds one token per sequence and returns the next-token logits:

    step(token_ids (batch,) int32, index: int, state: dict[str, ndarray])
        -> (logits (batch, vocab), updates: dict[str, ndarray], attention: ndarray | None)

`state` entries are batch-first, so a search repeats or reorders hypotheses with one `take(axis=0)` per
entry, whatever model family or runtime (onnxruntime, Keras) computes the step; beam search leaves alone
the entries the model keeps once per source sentence (`shared`). `attention`, when not None,
is `(batch, layers, heads, src_len)` and is collected per step if asked for.

Every search also takes `Constraints`, what CTranslate2's `translate_batch` calls `target_prefix`,
`repetition_penalty`, `no_repeat_ngram_size` and `min_decoding_length` (here `min_new_tokens`): rules
applied to each step's logits before the search chooses, the same for greedy, sampling and beam search.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Generator, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

StepFn = Callable[[np.ndarray, int, dict], tuple]


@dataclass
class SearchResult:
    """Generated ids `(batch, length)` (EOS included, pad after it), with optional extras."""

    tokens: np.ndarray
    scores: np.ndarray | None = None  # (batch,) log-probability (beam: length-normalised)
    attention: np.ndarray | None = None  # (batch, length, layers, heads, src_len)
    # Beam search with num_hypotheses > 1: per row, up to that many (ids, score), best first, distinct;
    # the first is `tokens[row]` (without its trailing padding) and `scores[row]`.
    hypotheses: list[list[tuple[np.ndarray, float]]] | None = field(default=None)


@dataclass(frozen=True)
class Constraints:
    """Rules every search applies to each step's logits; the defaults change nothing.

    Args:
        min_new_tokens: EOS is not allowed before this many output tokens (the forced prefix included).
        repetition_penalty: CTRL's penalty (Keskar et al., 2019, eq. 1): the logit of a token the
            hypothesis already holds is divided by it when positive and multiplied by it when negative,
            so > 1 makes repeats less likely.
        no_repeat_ngram_size: a token that would complete an n-gram of this size already in the hypothesis
            is not allowed (0: no rule).
        prefix: per batch row, ids the output must start with (no BOS, no EOS), or None. While a row is
            inside its prefix the rules above do not apply to it, and its score counts the forced tokens'
            log-probabilities, so hypotheses with and without a prefix are scored alike.
    """

    min_new_tokens: int = 0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    prefix: tuple[np.ndarray, ...] | None = None

    @property
    def changes_logits(self) -> bool:
        return bool(self.min_new_tokens or self.repetition_penalty != 1.0 or self.no_repeat_ngram_size)

    def __bool__(self) -> bool:
        return self.changes_logits or self.prefix is not None

    def repeated(self, k: int) -> Constraints:
        """The same rules for `k` hypotheses per row (row b's prefix at rows b * k ... b * k + k - 1)."""
        if self.prefix is None:
            return self
        return replace(self, prefix=tuple(p for p in self.prefix for _ in range(k)))

    def forced(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """`(rows, ids)`: the rows inside their prefix at output position `index`, and the id each must take."""
        if self.prefix is None:
            return np.zeros((0,), np.int64), np.zeros((0,), np.int64)
        rows = [row for row, ids in enumerate(self.prefix) if index < len(ids)]
        return np.asarray(rows, np.int64), np.asarray([self.prefix[r][index] for r in rows], np.int64)

    def apply(self, logits: np.ndarray, history: np.ndarray, index: int, eos_id: int) -> np.ndarray:
        """The logits `(rows, vocab)` with the rules applied; `history` `(rows, index)` holds each row's
        output so far. Returns `logits` itself when no rule changes anything."""
        if not self.changes_logits:
            return logits
        adjusted = np.array(logits, dtype=np.float32, copy=True)
        if index < self.min_new_tokens:
            adjusted[:, eos_id] = -np.inf
        if self.repetition_penalty != 1.0 and history.shape[1]:
            seen = np.zeros(adjusted.shape, dtype=bool)
            np.put_along_axis(seen, history.astype(np.int64), True, axis=1)
            penalised = np.where(adjusted > 0, adjusted / self.repetition_penalty,
                                 adjusted * self.repetition_penalty)
            adjusted = np.where(seen, penalised, adjusted)
        n = self.no_repeat_ngram_size
        if n and history.shape[1] >= n - 1:
            adjusted[_repeating_ngram_completions(history, n)] = -np.inf
        rows, _ = self.forced(index)
        adjusted[rows] = logits[rows]  # a forced token is the user's, not the model's choice
        return adjusted

    def force_log_probs(self, log_probs: np.ndarray, index: int) -> np.ndarray:
        """Beam search: rows inside their prefix may only continue with the forced id (at its own
        log-probability). Changes `log_probs` in place."""
        rows, ids = self.forced(index)
        if rows.size:
            kept = log_probs[rows, ids]
            log_probs[rows] = -np.inf
            log_probs[rows, ids] = kept
        return log_probs


def _repeating_ngram_completions(history: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """`(rows, ids)` of the tokens that would repeat an n-gram of `history` `(rows, length)`: those that
    followed an earlier occurrence of the row's last n - 1 tokens."""
    length = history.shape[1]
    if n == 1:
        rows = np.repeat(np.arange(history.shape[0]), length)
        return rows, history.reshape(-1).astype(np.int64)
    if length < n:
        return np.zeros((0,), np.int64), np.zeros((0,), np.int64)
    windows = np.lib.stride_tricks.sliding_window_view(history, n, axis=1)  # (rows, length - n + 1, n)
    context = history[:, length - n + 1:]  # (rows, n - 1)
    matches = (windows[:, :, :-1] == context[:, None, :]).all(axis=-1)  # (rows, length - n + 1)
    rows, starts = np.nonzero(matches)
    return rows, windows[rows, starts, -1].astype(np.int64)


def log_softmax(logits: np.ndarray, dtype=np.float64) -> np.ndarray:
    logits = np.asarray(logits, dtype=dtype)  # no copy when it already has that dtype
    shifted = logits - logits.max(axis=-1, keepdims=True)
    shifted -= np.log(np.exp(shifted).sum(axis=-1, keepdims=True))  # in place: one batch x vocab copy fewer
    return shifted


def token_log_probs(logits: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """`log_softmax(logits)[row, tokens[row]]` without the whole log-softmax: the chosen logit minus the
    row's log-sum-exp, in float32 (a score to report, not a choice; the float64 `log_softmax` over a
    batch of 8,000-piece rows cost more than a decoder step of the Multi30k model)."""
    logits = np.asarray(logits, dtype=np.float32)
    top = logits.max(axis=-1)
    log_sum = top + np.log(np.exp(logits - top[:, None]).sum(axis=-1))
    return (np.take_along_axis(logits, tokens[:, None], 1)[:, 0] - log_sum).astype(np.float64)


def top_k_stable(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the `k` largest values of each row, largest first, ties to the lower index: what
    `np.argsort(-values, kind="stable")[:, :k]` returns, found by `k` rounds of `argmax` (which returns
    the first of equal maxima) instead of sorting each row of batch x beams x vocabulary scores.

    A row where a pick is -inf (fewer than `k` finite values: a masked pick could be picked again) or NaN
    is settled by the sort itself. Rows of at most 16 x `k` values (beam search over the top-k step's
    `k` x `k` candidates) are sorted outright: there `k` rounds of numpy calls cost more than the sort
    (about 10x at 16 values)."""
    if values.shape[-1] <= 16 * k:
        return np.argsort(-values, axis=-1, kind="stable")[:, :k]
    work = np.array(values, copy=True)
    rows = np.arange(values.shape[0])
    result = np.empty((values.shape[0], k), dtype=np.int64)
    unsure = np.zeros(values.shape[0], dtype=bool)
    for j in range(k):
        best = work.argmax(axis=-1)
        result[:, j] = best
        found = work[rows, best]
        unsure |= np.isneginf(found) | np.isnan(found)  # -inf: maybe an earlier pick again
        work[rows, best] = -np.inf
    for row in np.flatnonzero(unsure):
        result[row] = np.argsort(-values[row], kind="stable")[:k]
    return result


def tempered_log_softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
    """`log_softmax(logits / temperature)`, safe for every finite temperature > 0.

    The largest logit is subtracted before dividing, so the top token's scaled logit is exactly 0 and the
    others are <= 0: a tiny temperature sends them to -inf (probability 0) instead of overflowing
    `logits / temperature` to inf - inf = NaN (1e-40 would, in float32 and float64 alike). As the
    temperature goes to 0 this becomes greedy decoding, with ties shared evenly."""
    logits = np.asarray(logits, dtype=np.float64)
    with np.errstate(over="ignore"):
        scaled = (logits - logits.max(axis=-1, keepdims=True)) / temperature
    return log_softmax(scaled)


def _trim(tokens: np.ndarray, pad_id: int) -> np.ndarray:
    """Drops trailing columns that are padding in every row."""
    keep = np.flatnonzero((tokens != pad_id).any(axis=0))
    return tokens[:, : (keep[-1] + 1 if keep.size else 0)]


class StreamStep:
    """What a search knows after one step: `tokens` `(batch, t)` (beam search: each row's best hypothesis
    so far), of which the first `final[row]` of each row can no longer change.

    Worked out only when read, from `settle() -> (tokens, final)`: a search that is not streamed
    (`drain`) never stacks its columns or compares its beams for it."""

    def __init__(self, settle: Callable[[], tuple[np.ndarray, np.ndarray]]) -> None:
        self._settle = settle

    @functools.cached_property
    def _settled(self) -> tuple[np.ndarray, np.ndarray]:
        return self._settle()

    @property
    def tokens(self) -> np.ndarray:
        return self._settled[0]

    @property
    def final(self) -> np.ndarray:
        return self._settled[1]


# A search as a generator: it yields a `StreamStep` after every step and returns the `SearchResult`.
SearchSteps = Generator[StreamStep, None, SearchResult]


def drain(steps: SearchSteps) -> SearchResult:
    """Runs a search generator to its end; its `SearchResult`."""
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value


def new_final_ids(steps: SearchSteps, eos_id: int, pad_id: int
                  ) -> Generator[list[list[int]], None, SearchResult]:
    """Turns a search's `StreamStep`s into, per step, the ids each row has just made final (EOS included,
    nothing after it), with a last yield for what only the result settles; returns the `SearchResult`.
    The ids a row is given, joined, are its output in `SearchResult.tokens`."""
    emitted: np.ndarray | None = None
    done: np.ndarray | None = None

    def fresh(tokens: np.ndarray, final: np.ndarray) -> list[list[int]]:
        nonlocal emitted, done
        if emitted is None:
            emitted, done = np.zeros(len(tokens), np.int64), np.zeros(len(tokens), bool)
        out = []
        for row in range(len(tokens)):
            ids = []
            if not done[row]:
                for token in tokens[row, emitted[row]:final[row]].tolist():
                    if token == pad_id:
                        continue
                    ids.append(token)
                    if token == eos_id:
                        done[row] = True
                        break
                emitted[row] = max(emitted[row], final[row])
            out.append(ids)
        return out

    while True:
        try:
            progress = next(steps)
        except StopIteration as stop:
            result = stop.value
            rest = fresh(result.tokens, np.full(len(result.tokens), result.tokens.shape[1]))
            if any(rest):
                yield rest
            return result
        new = fresh(progress.tokens, progress.final)
        if any(new):
            yield new


def _run(step: StepFn, state: dict, batch_size: int, max_length: int, bos_id: int, eos_id: int,
         pad_id: int, choose: Callable[[np.ndarray], np.ndarray], return_attention: bool,
         constraints: Constraints | None, top_one_step: StepFn | None = None) -> SearchSteps:
    """The loop greedy decoding and sampling share: `choose` maps logits to next tokens. Every token is
    final as soon as it is chosen. `top_one_step`, where given (greedy without constraints), is the step
    returning each row's best log-probability and id in place of its logits, and replaces `step` and
    `choose`."""
    constraints = constraints or Constraints()
    state = dict(state)
    token = np.full((batch_size,), bos_id, dtype=np.int32)
    finished = np.zeros((batch_size,), dtype=bool)
    columns, scores, attention = [], np.zeros((batch_size,)), []
    for index in range(max_length):
        chosen, updates, weights = (top_one_step or step)(token, index, state)
        state.update(updates)
        if top_one_step is not None:
            top_log_probs, top_ids = chosen  # (batch, 1) each
            token, token_scores = top_ids[:, 0].astype(np.int32), top_log_probs[:, 0]
        else:
            logits = chosen
            if constraints.changes_logits:
                history = np.stack(columns, axis=1) if columns else np.zeros((batch_size, 0), np.int32)
                logits = constraints.apply(logits, history, index, eos_id)
            token = choose(logits).astype(np.int32)
            forced_rows, forced_ids = constraints.forced(index)
            token[forced_rows] = forced_ids
            token_scores = token_log_probs(logits, token)
        token = np.where(finished, pad_id, token)
        scores += np.where(finished, 0.0, token_scores)
        columns.append(token)
        if return_attention and weights is not None:
            attention.append(np.array(weights))  # the step may reuse its array
        finished |= token == eos_id
        yield StreamStep(lambda done=list(columns): (np.stack(done, axis=1), np.full((batch_size,), len(done))))
        if finished.all():
            break
    tokens = np.stack(columns, axis=1)
    return SearchResult(tokens=tokens, scores=scores,
                        attention=np.stack(attention, axis=1) if attention else None)


def greedy_steps(step: StepFn, state: dict, batch_size: int, max_length: int, bos_id: int, eos_id: int,
                 pad_id: int = 0, return_attention: bool = False,
                 constraints: Constraints | None = None, shared: Collection[str] = frozenset(),
                 position_axes: Mapping[str, int] | None = None, top_k_step: StepFn | None = None
                 ) -> SearchSteps:
    """`greedy_search` step by step (see `SearchSteps`). `shared` and `position_axes` as for `beam_steps`:
    with one row per sentence nothing is repeated or reordered, so every search takes them and only beam
    search needs them.

    `top_k_step`, where given, is the step with each row's best log-probability and id in place of its
    logits (`beam_steps`' `top_k_step` at one column: the export's `decoder_step_top_k` with `beam_size`
    1), the same choice, ties to the lower id as `argmax`, without the logits leaving the graph (the
    Multi30k model's int8 greedy search at batch 32: 1.17x faster). It is used where no constraint needs
    the whole logits."""
    top_one = top_k_step if top_k_step is not None and not constraints else None
    return _run(step, state, batch_size, max_length, bos_id, eos_id, pad_id,
                lambda logits: logits.argmax(axis=-1), return_attention, constraints, top_one)


def greedy_search(*args, **kwargs) -> SearchResult:
    """Takes the most likely token at every step; stops at EOS or `max_length` tokens. Arguments as
    `greedy_steps`."""
    return drain(greedy_steps(*args, **kwargs))


def sample_search(*args, **kwargs) -> SearchResult:
    """Sampling (`sample_steps`, whose arguments it takes) to the end."""
    return drain(sample_steps(*args, **kwargs))


def sample_steps(step: StepFn, state: dict, batch_size: int, max_length: int, bos_id: int, eos_id: int,
                 pad_id: int = 0, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                 seed: int | Sequence | None = None, return_attention: bool = False,
                 constraints: Constraints | None = None, shared: Collection[str] = frozenset(),
                 position_axes: Mapping[str, int] | None = None) -> SearchSteps:
    """Samples each token from the softmax at `temperature`, restricted to the `top_k` most likely tokens
    (0: no limit) and to the smallest set whose probability reaches `top_p` (nucleus sampling, Holtzman
    et al., 2020). The same `seed` gives the same output.

    `seed` may also be a sequence of `batch_size` seeds (anything `np.random.default_rng` takes, e.g.
    `(request_seed, position)`): each row then draws from its own generator, so its sample does not
    depend on which other rows share the batch (what a server that batches requests needs)."""
    per_row = seed is not None and not isinstance(seed, int | np.integer)
    if per_row and len(seed) != batch_size:
        raise ValueError(f"got {len(seed)} seeds for a batch of {batch_size}")
    rngs = [np.random.default_rng(s) for s in seed] if per_row else [np.random.default_rng(seed)] * batch_size

    def choose(logits: np.ndarray) -> np.ndarray:
        log_probs = tempered_log_softmax(logits, temperature)  # (batch, vocab)
        order = np.argsort(-log_probs, axis=-1, kind="stable")
        sorted_probs = np.exp(np.take_along_axis(log_probs, order, axis=-1))
        keep = np.ones_like(sorted_probs, dtype=bool)
        if top_k:
            keep[:, top_k:] = False
        if top_p < 1.0:
            # Keep a token while the mass before it is still below top_p (the top token always stays).
            mass_before = np.cumsum(sorted_probs, axis=-1) - sorted_probs
            keep &= mass_before < top_p
        probs = np.where(keep, sorted_probs, 0.0)
        probs /= probs.sum(axis=-1, keepdims=True)
        picks = np.array([rng.choice(probs.shape[1], p=row) for rng, row in zip(rngs, probs, strict=True)])
        return np.take_along_axis(order, picks[:, None], axis=-1)[:, 0]

    return _run(step, state, batch_size, max_length, bos_id, eos_id, pad_id, choose, return_attention,
                constraints)


def length_penalty_factor(lengths: np.ndarray, alpha: float) -> np.ndarray:
    """GNMT's length penalty ((5 + |Y|) / 6)^alpha (Wu et al., 2016, eq. 14); alpha=0 disables it."""
    return ((5.0 + lengths) / 6.0) ** alpha


def beam_search(*args, **kwargs) -> SearchResult:
    """Keeps the `beam_size` most likely prefixes per sequence; returns the best finished hypothesis,
    ranked by log-probability divided by the GNMT length penalty (and, with `num_hypotheses` > 1, that
    many of the final beams in the same order, in `SearchResult.hypotheses`). Arguments as `beam_steps`."""
    return drain(beam_steps(*args, **kwargs))


def row_copies(source: np.ndarray, moved: np.ndarray) -> list[tuple[int, int]] | None:
    """`(row, source[row])` for every moved row, for `_reorder_rows` to copy one by one; None where a
    moved row is also some moved row's source (it must then be read before it is overwritten).

    After `stay_in_place` no moved row is read: a row moves only when its hypothesis had no child to stay
    in it, so nothing extends it."""
    targets = moved.tolist()
    sources = source[moved].tolist()
    return list(zip(targets, sources, strict=True)) if set(targets).isdisjoint(sources) else None


def _reorder_rows(values: np.ndarray, source: np.ndarray, moved: np.ndarray, filled: tuple | None,
                  copies: list[tuple[int, int]] | None = None) -> np.ndarray:
    """`values[source]`: hypothesis `i` takes the state of hypothesis `source[i]`; `moved` are the rows
    where `source[i] != i` (the same for every entry of a step, so the search finds them once), and
    `copies` their `row_copies` where those can be copied one by one.

    Written into `values` itself where it is writeable (the search owns its state entries): only the rows
    whose hypothesis changed are copied and, with `filled` (the index after the row axis of the positions
    the steps have written so far, such as `(slice(None), slice(0, index + 1))` for a self-attention
    cache), only those positions; the step masks the positions not written yet, so what they hold does not
    matter. Most hypotheses continue themselves from one step to the next, so this copies a fraction of
    a whole reorder (the Multi30k model at batch 32 x 4 beams: about 0.2 against 0.6 ms per cache entry
    and step), and the step's IO binding keeps the same buffer. Elsewhere a new array, `values[source]`.

    With `copies`, each row is one slice assignment, with no gathered array in between: about half the
    time of the fancy-indexed copy at 3 of 4 rows (6.6 against 12.4 us per entry; a batch-1 beam-4 step
    reorders six), and no slower at 64 of 128 rows."""
    if not values.flags.writeable:
        return np.take(values, source, axis=0)
    positions = filled or ()
    if copies is not None:
        for row, parent in copies:
            values[(row, *positions)] = values[(parent, *positions)]
    elif moved.size:
        # The right-hand side is gathered into a new array before anything is written, so a row that is
        # both read and overwritten is read first.
        values[(moved, *positions)] = values[(source[moved], *positions)]
    return values


def stay_in_place(parents: np.ndarray) -> np.ndarray:
    """The order in which a sentence's new hypotheses take its `k` rows of the state, `(batch, k)`:
    row `t` takes new hypothesis `order[:, t]`, where `parents` `(batch, k)` is the row (0..k-1) each new
    hypothesis extends, best first. Each parent's best child stays in its parent's row, the other
    children take the rows no child continues, in order; so only those children's state is copied
    (`_reorder_rows`), where ranking the new hypotheses into rows 0..k-1 moves most of them.

    Which row a hypothesis lives in changes no score and no text; it only decides exact ties, which
    the search breaks towards the lower row, as between candidates of equal score before.

    A loop over plain lists: for k of a few, numpy's per-call cost is what a vectorised version pays
    (about the same at 32 sentences, 7.5 against 54 us at one)."""
    batch, k = parents.shape
    orders = []
    for row in parents.tolist():
        order, others = [-1] * k, []
        for child, parent in enumerate(row):
            if order[parent] < 0:
                order[parent] = child
            else:
                others.append(child)
        for free, child in zip([t for t in range(k) if order[t] < 0], others, strict=True):
            order[free] = child
        orders.append(order)
    return np.array(orders, dtype=parents.dtype).reshape(batch, k)


def _settled(history: np.ndarray, alive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`(tokens, final)` of a beam: per row the first live hypothesis `(batch, t)`, and the length of the
    prefix all its live hypotheses share, which no later step can change (every hypothesis the search
    can still return extends one of them). `history` `(batch, k, t)`, `alive` `(batch, k)`."""
    batch, _, length = history.shape
    first = alive.argmax(axis=-1)  # a row with none alive (cannot happen after step 0) takes beam 0
    tokens = history[np.arange(batch), first]
    same = (history == tokens[:, None, :]) | ~alive[:, :, None]  # (batch, k, t)
    agreed = same.all(axis=1)  # (batch, t)
    final = np.where(agreed.all(axis=-1), length, agreed.argmin(axis=-1))
    return tokens, final


def beam_steps(step: StepFn, state: dict, batch_size: int, max_length: int, bos_id: int, eos_id: int,
               pad_id: int = 0, *, beam_size: int, length_penalty: float, num_hypotheses: int = 1,
               return_attention: bool = False, constraints: Constraints | None = None,
               shared: Collection[str] = frozenset(), top_k_step: StepFn | None = None,
               position_axes: Mapping[str, int] | None = None) -> SearchSteps:
    """`beam_search` step by step: after each step, each row's prefix that all its live hypotheses share
    is final (`_settled`); the rest comes with the result.

    `shared` names the state entries the step reads once per source sentence for all its hypotheses
    (`serving.contract.shared_by_beams`): they stay as given, never repeated or reordered.

    `top_k_step`, where given, is the step with each row's `beam_size` best log-probabilities in place of
    its logits: `(top_log_probs (batch, beam_size) float32, top_ids (batch, beam_size))` first in what it
    returns, best first, ties to the lower id (the export's `decoder_step_top_k`). A hypothesis's other
    continuations can never make a sentence's `beam_size` best, so ranking these `beam_size` x `beam_size`
    candidates chooses what ranking `beam_size` x vocabulary does, at a fraction of the work. It is used
    where no constraint needs the whole logits and the vocabulary has at least `beam_size` ids.

    `position_axes` maps an updated entry to its axis of decoding positions (a self-attention cache's
    `max_length`: `serving.contract.position_axes`), where the step at `index` writes position `index`
    and masks the later ones: reordering hypotheses then copies the positions written so far only."""
    k = beam_size
    position_axes = position_axes or {}
    constraints = (constraints or Constraints()).repeated(k)
    candidates_only = top_k_step is not None and not constraints
    # Hypothesis j of sequence b lives at row b * k + j of every state entry not shared by the beams.
    state = {name: value if name in shared else np.repeat(value, k, axis=0) for name, value in state.items()}
    scores = np.full((batch_size, k), -np.inf)
    scores[:, 0] = 0.0  # all beams start identical: only one may expand at the first step
    token = np.full((batch_size * k,), bos_id, dtype=np.int32)
    finished = np.zeros((batch_size * k,), dtype=bool)
    lengths = np.zeros((batch_size * k,))
    history = np.zeros((batch_size * k, 0), dtype=np.int32)
    attention = None
    updated: set[str] = set()
    sentence = np.arange(batch_size)[:, None]
    rows = sentence * k
    hypotheses = np.arange(batch_size * k)
    # Per entry with a position axis, the full slices before it (after the row axis): `_reorder_rows`
    # copies the positions written so far.
    leading = {name: (slice(None),) * (axis - 1) for name, axis in position_axes.items()}
    for index in range(max_length):
        if candidates_only:
            (log_probs, ids), updates, weights = top_k_step(token, index, state)  # (batch * k, k) each
            # Both are read before the next step overwrites them (the in-place step's output buffers):
            # copied only to be changed.
            if finished.any():
                log_probs, ids = np.array(log_probs, np.float32), np.array(ids, np.int64)
                # A finished hypothesis may only continue with padding, at no cost, so it keeps its score.
                log_probs[finished] = -np.inf
                log_probs[finished, 0], ids[finished, 0] = 0.0, pad_id
        else:
            logits, updates, weights = step(token, index, state)
            logits = constraints.apply(logits, history, index, eos_id)
            # float32 per token (half the cost of float64 over batch * k * vocab); the running scores it
            # is added to stay float64.
            log_probs = constraints.force_log_probs(log_softmax(logits, np.float32), index)  # (batch * k, vocab)
            log_probs[finished] = -np.inf
            log_probs[finished, pad_id] = 0.0
            ids = None
        state.update(updates)
        updated.update(updates)
        width = log_probs.shape[-1]  # continuations ranked per hypothesis: k candidates, or the vocabulary
        total = (scores.reshape(-1, 1) + log_probs).reshape(batch_size, k * width)
        best = top_k_stable(total, k)  # (batch, k), best first
        parents = best // width
        order = stay_in_place(parents)  # fewest rows moved
        # Indexing with `sentence` rather than `take_along_axis`: a quarter of the per-call cost on these
        # few values (1.2 against 5.3 us at 1 x 4), which at batch 1 is what the search's step costs.
        best, parents = best[sentence, order], parents[sentence, order]
        scores = total[sentence, best]
        source = (rows + parents).reshape(-1)  # the hypothesis each new one extends
        column = (best % width).reshape(-1)
        token = (column if ids is None else ids[source, column]).astype(np.int32)
        moved = np.flatnonzero(source != hypotheses)
        if moved.size:
            written, copies = slice(0, index + 1), row_copies(source, moved)
            for name in updated:  # only updated entries differ; shared ones never do
                lead = leading.get(name)
                state[name] = _reorder_rows(state[name], source, moved, None if lead is None else (*lead, written),
                                            copies)
        history = np.concatenate([history[source], token[:, None]], axis=1)
        was_finished = finished[source]
        lengths = lengths[source] + (~was_finished)
        finished = was_finished | (token == eos_id)
        if return_attention and weights is not None:
            step_attention = np.asarray(weights)[source][:, None]
            attention = step_attention if attention is None else np.concatenate(
                [attention[source], step_attention], axis=1)
        yield StreamStep(lambda h=history, s=scores: _settled(h.reshape(batch_size, k, -1), np.isfinite(s)))
        if finished.all():
            break
    normalised = scores.reshape(-1) / length_penalty_factor(np.maximum(lengths, 1), length_penalty)
    normalised = np.where(np.isfinite(normalised), normalised, -np.inf).reshape(batch_size, k)
    # Prefer finished hypotheses: an unfinished one only wins where nothing finished.
    finished_k = finished.reshape(batch_size, k)
    ranked = np.where(finished_k, normalised, normalised - 1e9)
    choice = rows[:, 0] + ranked.argmax(axis=-1)
    tokens = _trim(history[choice], pad_id)
    hypotheses = None
    if num_hypotheses > 1:
        # The stable sort puts the first of equal maxima first, as argmax does: the best is `choice`.
        order = np.argsort(-ranked, axis=-1, kind="stable")[:, :num_hypotheses]
        hypotheses = [[(_trim(history[b * k + j][None], pad_id)[0], float(normalised[b, j]))
                       for j in order[b] if np.isfinite(normalised[b, j])] for b in range(batch_size)]
    return SearchResult(tokens=tokens, scores=normalised.reshape(-1)[choice],
                        attention=attention[choice] if attention is not None else None,
                        hypotheses=hypotheses)


SearchFn = Callable[..., SearchResult]
# The decoding methods by name: the one list the CLIs, the HTTP API and both runtimes read.
SEARCHES: dict[str, SearchFn] = {"greedy": greedy_search, "beam": beam_search, "sample": sample_search}
# The same searches as generators of `StreamStep`s, for streaming (`serving.runtime.Runtime.generate_stream`).
STREAMS: dict[str, Callable[..., SearchSteps]] = {"greedy": greedy_steps, "beam": beam_steps,
                                                   "sample": sample_steps}
