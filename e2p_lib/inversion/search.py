"""e2p's search: the best prompt for each target within an environment budget, in named phases.

1. candidate pools (`_Search.pools`): the answer index's prompts whose real answers land nearest the target (free:
   02 answered them once for all targets), and the prompts of the stored outputs nearest it (free when the index
   holds their rows). Every candidate's copied share is measured against those outputs (and the target text, when
   the target is a text); under `clean` no candidate above the line is sent, shown to the policy or returned.
2. pasting calls (`clean=False` only): echo and grounded prompts, each one call, before anything else.
   Topic calls (`topics`): the best known prompts with the target's topic words added (clean), one call each.
3. retrieved calls: `retrieved_share` of the exploring calls (rounded down) on the neighbours' prompts the index
   does not know.
4. corrector rounds: the policy reads the best known prompts with their real cosines (its hypotheses) and writes
   rewrites; the forward model ranks them at no environment cost and the best-ranked are answered. Each round's
   answers join the hypotheses the next round reads (vec2text's corrector loop, with real answers); a round that
   could not spend its share (its rewrites repeated known prompts) hands it to the next.
5. the rest (`spend_all`): calls still left go to the best-ranked candidates not answered yet, and the final call
   too where the final pick so far was answered here (it then costs nothing); a known prompt keeps it for its answer.
6. final pick: the prompt with the best real cosine, or a more fluent one whose answer lands within `fluency_margin`
   of it (a prompt is judged by both). At `budget=1` nothing is answered before the final call: the
   policy's greedy rewrite of the index's best prompts is that call (the best known prompt where it wrote a known
   one, or without the policy).

Every call is counted (`environment_calls` <= budget); `trajectory` holds each round's best.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from e2p_lib.evaluate.quality import References
from e2p_lib.inversion.config import SearchConfig
from e2p_lib.inversion.results import (
    POLICY_SOURCES,
    Candidate,
    InversionResult,
    fill,
    known_best,
    predicted_or_lowest,
    real_or_lowest,
)
from e2p_lib.models.policy import Hypothesis
from e2p_lib.pipeline import as_answers
from e2p_lib.store.retrieval import nearest_rows

COPY_TOLERANCE = 1e-9  # a share equal to the line is clean (float rounding never tips it over)


def run_search(
    inverter,
    targets: np.ndarray,
    config: SearchConfig,
    texts: Sequence[str] | None = None,
    exclude_ids=None,
    retrieved: Sequence[Sequence[str]] | None = None,
) -> list[InversionResult]:
    """The search of the module docstring over (n, d) unit `targets` (`Inverter.search` checks and embeds them).

    Raises:
        ValueError: an option that needs a missing piece (an environment; a store of outputs for echo or ground;
            a clean line for a clean search with texts to copy from), or `retrieved`/`exclude_ids` not one entry
            per target. All before any environment call.
    """
    search = _Search(inverter, targets, config, texts, exclude_ids, retrieved)
    search.pools()
    search.pasting_calls()
    search.topic_calls()
    search.retrieved_calls()
    search.corrector_rounds()
    search.spend_rest()
    return search.final_pick()


class _Search:
    """One search's state: per target, its candidates (`history`), the prompts answered (`memo`: prompt -> (cosine,
    answer)), the exploring calls left (`left`) and each round's best (`trajectory`)."""

    def __init__(self, inverter, targets, config: SearchConfig, texts, exclude_ids, retrieved):
        n = len(targets)
        self.inverter, self.targets, self.config, self.n = inverter, targets, config, n
        self.exclude_ids = exclude_ids
        for name, rows in (("retrieved", retrieved), ("exclude_ids", exclude_ids)):
            if rows is not None and len(rows) != n:
                raise ValueError(f"{name} holds {len(rows)} rows for {n} targets: pass one per target.")
        if (config.echo or config.ground) and inverter.retrieval is None:
            option, fix = (f"echo={config.echo}", "echo=0") if config.echo else (f"ground={config.ground}", "ground=0")
            raise ValueError(
                f"{option} reads the stored outputs nearest each target, and no store of them is "
                "loaded: run notebooks/02_pinecone.ipynb (load_inverter then opens its store), build the Inverter "
                f"with retrieval=<a VectorStore of the outputs>, or pass {fix}."
            )
        self.reward = inverter.reward(config.answer_tokens)  # refuses a missing environment
        _check_index_fits(inverter, config.answer_tokens)
        self.line = config.max_copied_share if config.max_copied_share is not None else inverter.max_copied_share
        if config.clean and self.line is None and (inverter.retrieval is not None or texts):
            raise ValueError(
                "A clean search (SearchConfig(clean=True), the default) needs the clean line: the most a prompt may "
                "copy from the texts it could read. 02_pinecone records it (load_inverter reads it); or pass "
                "SearchConfig(max_copied_share=...), or clean=False for the pasting track."
            )
        self.neighbours = (
            nearest_rows(inverter.retrieval, targets, config.neighbours, exclude_ids)
            if inverter.retrieval is not None
            else [[] for _ in range(n)]
        )
        self.references = [
            References({nb.id: nb.output for nb in row}, text)
            for row, text in zip(self.neighbours, texts if texts is not None else [None] * n)
        ]
        if config.use_policy:
            inverter.check_reading(index_needed=False)  # without an index the policy reads what the search answered
            if config.neighbours < inverter.policy.config.answers:
                raise ValueError(
                    f"neighbours={config.neighbours}: the policy reads the {inverter.policy.config.answers} stored "
                    f"outputs nearest each target; pass neighbours >= {inverter.policy.config.answers}."
                )
        # the stored outputs the policy reads beside the known prompts, when it was trained to (PolicyConfig.answers)
        self.answers = [as_answers(row[: inverter.policy.config.answers]) for row in self.neighbours]
        self.reading: list[list[Hypothesis] | None] = [None] * n  # what the policy read when it first wrote
        self.retrieved = retrieved
        self.history: list[list[Candidate]] = [[] for _ in range(n)]
        self.memo: list[dict[str, tuple[float, str]]] = [{} for _ in range(n)]
        self.trajectory: list[list[Candidate]] = [[] for _ in range(n)]
        self.left = [config.budget - 1] * n  # calls for exploring; the last call is kept for the final answer
        self.perplexity: dict[str, float] = {}  # prompt -> its perplexity under the base LM, once measured

    # --- candidates ------------------------------------------------------------------------------------------------

    def allowed(self, candidate: Candidate) -> bool:
        """Whether a candidate may be sent, shown or returned: always, unless clean and above the line."""
        return not self.config.clean or self.line is None or candidate.copied_share <= self.line + COPY_TOLERANCE

    def add(self, rows, source, step: int = 0, row_ids=None) -> list[list[Candidate]]:
        """Per target, candidates of the distinct non-empty prompts in `rows` not held yet, with their copied share
        (a stored prompt without its own row's output, `row_ids`) and forward-model cosine; they join `history`.
        `source` is a name, or a function of a prompt's position in its row."""
        fresh = []
        for i, row in enumerate(rows):
            seen = {c.prompt for c in self.history[i]}
            distinct: dict[str, str | None] = {}  # prompt -> its row id, first occurrence kept
            for prompt, row_id in zip(row, row_ids[i] if row_ids is not None else [None] * len(row)):
                distinct.setdefault(prompt, row_id)
            fresh.append(
                [
                    Candidate(
                        prompt,
                        step,
                        source(j) if callable(source) else source,
                        1.0,
                        copied_share=self.references[i].copied_share(prompt, own_row=row_id),
                        row_id=row_id,
                    )
                    for j, (prompt, row_id) in enumerate(distinct.items())
                    if prompt.strip() and prompt not in seen
                ]
            )
        self.inverter.predict(fresh, self.targets)
        for i, row in enumerate(fresh):
            self.history[i] += row
        return fresh

    def spend(self, rows: list[list[Candidate]], calls: Sequence[int]) -> None:
        """Answer the first `calls[i]` allowed candidates of target i's row; calls they leave stay in `left`."""
        asked = [[c for c in row if self.allowed(c)][:count] for row, count in zip(rows, calls)]
        self.inverter.answer(asked, self.targets, self.memo, self.reward)
        for i, row in enumerate(asked):
            self.left[i] -= len(row)

    def outputs(self) -> list[list[str]]:
        """Per target, its neighbours' outputs, nearest first: what pasting and topic prompts are made from."""
        return [[nb.output for nb in row] for row in self.neighbours]

    def ranked_known(self) -> list[list[Candidate]]:
        """Per target, its allowed dataset-style candidates with a real cosine, best first (`known_best`)."""
        return [[c for c in known_best(row) if self.allowed(c)] for row in self.history]

    def best_known(self, i: int) -> Candidate | None:
        """Target i's allowed, `payable` candidate with the best real cosine (None when none has one). Before the
        final pick every candidate is payable: the final call is kept until `spend_rest`."""
        known = [
            c for c in self.history[i] if self.allowed(c) and self.payable(i, c) and not math.isnan(c.achieved_cosine)
        ]
        return max(known, key=real_or_lowest, default=None)

    # --- 1. candidate pools ------------------------------------------------------------------------------------------

    def pools(self) -> None:
        """The index's nearest prompts and the neighbours' prompts it holds (known, free), then the rest of the
        neighbours' prompts (or `retrieved`), to be answered."""
        index, config = self.inverter.index, self.config
        if index is not None:
            found = index.hypotheses(self.targets, k=config.pool, exclude_ids=self.exclude_ids)
            if self.retrieved is None:
                pairs = [[(nb.id, nb.prompt) for nb in row] for row in self.neighbours]
                for row, also in zip(found, index.known(pairs, self.targets)):
                    have = {h.prompt for h in row}
                    row += [h for h in also if h.prompt not in have]
            fresh = self.add(
                [[h.prompt for h in row] for row in found], "index", row_ids=[[h.id for h in row] for row in found]
            )
            for row, hypotheses in zip(fresh, found):
                cosines: dict[str, float] = {}
                for h in hypotheses:  # the first copy's, as `add` keeps the first copy's row id
                    cosines.setdefault(h.prompt, h.cosine)
                for c in row:
                    c.achieved_cosine = cosines[c.prompt]
        if self.retrieved is not None:
            self.to_retrieve = self.add(self.retrieved, "retrieved")
        else:
            self.to_retrieve = self.add(
                [[nb.prompt for nb in row] for row in self.neighbours],
                "retrieved",
                row_ids=[[nb.id for nb in row] for row in self.neighbours],
            )

    # --- 2. pasting calls (clean=False) ----------------------------------------------------------------------------

    def pasting_calls(self) -> None:
        """Echo, then grounded prompts, within the exploring calls (at budget 1: kept for the final pick's rules)."""
        from e2p_lib.inversion.pasting import composed_texts, echo_prompts, grounded_prompts

        config = self.config
        self.echoes = self.firsts = None
        if not (config.echo or config.ground):
            return
        self.texts = composed_texts(self.outputs(), self.targets, self.inverter.embedder)
        if config.echo:
            rows = self.add(echo_prompts(self.texts, config.echo), "echo")
            self.echoes = [[c.prompt for c in row] for row in rows]
            self.spend(rows, [min(config.echo, c) for c in self.left])
        if config.ground:  # the best known prompts, grounded in the composed text, within the calls left
            prompts = grounded_prompts(_prompts(self.ranked_known()), self.texts, config.ground)
            prompts = [row[:c] if config.budget > 1 else row[:1] for row, c in zip(prompts, self.left)]
            rows = self.add(prompts, "grounded")
            self.firsts = [row[0] if row else None for row in prompts]
            self.spend(rows, [min(config.ground, c) for c in self.left])

    def topic_calls(self) -> None:
        """`topics` calls on the best known prompts with the target's topic words added, within the exploring calls;
        none at budget 1 (its one call is the policy's rewrite), nor without a store of outputs to read topics from
        (the calls go to the other pools). Never shown to the policy, like the pasting track's prompts. Each is
        measured as the dataset prompt it extends is, without that row's output (`row_id`)."""
        from e2p_lib.inversion.topics import choose_topics, topic_prompts

        config = self.config
        if not config.topics or config.budget == 1 or self.inverter.retrieval is None:
            return
        found = choose_topics(self.targets, self.outputs(), self.inverter.embed)  # cached: searches repeat phrases
        known = self.ranked_known()
        prompts = topic_prompts(_prompts(known), found, config.topics)
        # judged as the dataset prompt it extends is: without that row's output, which the prompt's input may quote
        row_ids = [[_extended(p, row).row_id for p in ps] for ps, row in zip(prompts, known)]
        rows = self.add(prompts, "topics", row_ids=row_ids)
        self.spend(rows, [min(config.topics, c) for c in self.left])

    # --- 3. retrieved calls ------------------------------------------------------------------------------------------

    def retrieved_calls(self) -> None:
        """`retrieved_share` of each target's exploring calls (rounded down: at 2 calls the one exploring call is the
        policy's) on its unknown retrieved prompts; all of them without the policy (nothing else would use them)."""
        share = self.config.retrieved_share if self.config.use_policy else 1.0
        calls = [math.floor(c * share) for c in self.left]
        self.spend(self.to_retrieve, calls)

    # --- 4. corrector rounds ------------------------------------------------------------------------------------------

    def corrector_rounds(self) -> None:
        """The policy's rewrites over `rounds` rounds, the best-ranked answered within each round's share of calls;
        at budget 1, its greedy rewrite alone, which becomes the final call (`final_pick`): the forward model ranks
        the policy's samples worse than its greedy prompt (docs/experiments.md#one-call-rewrite)."""
        config, inverter = self.config, self.inverter
        self.rewrites: list[list[Candidate]] = [[] for _ in range(self.n)]
        if not config.use_policy:
            return
        rounds, samples = (config.rounds, config.samples) if config.budget > 1 else (1, 1)
        for step in range(rounds):
            quotas = [-(-c // (rounds - step)) for c in self.left]  # this round's share of the calls left, rounded up
            if config.budget > 1 and not any(quotas):
                continue  # nothing of this round could be answered: write nothing
            shown = [
                inverter.shown_hypotheses([c for c in row if self.allowed(c)]) + answers
                for row, answers in zip(self.history, self.answers)
            ]
            self.reading = [first if first is not None else read for first, read in zip(self.reading, shown)]
            proposals = inverter.propose(
                self.targets,
                samples,
                config.temperature,
                config.top_p,
                config.seed + step,
                config.max_prompt_tokens,
                hypotheses=shown if inverter.policy.config.hypotheses or inverter.policy.config.answers else None,
            )
            fresh = self.add(proposals, lambda j: POLICY_SOURCES[min(j, 1)], step)
            for i, row in enumerate(fresh):
                row.sort(key=predicted_or_lowest, reverse=True)  # stable: greedy first on ties
                self.rewrites[i] += [c for c in row if self.allowed(c)]
            self.spend(fresh, [min(q, c) for q, c in zip(quotas, self.left)])
            for i in range(self.n):
                best = self.best_known(i)
                if best is not None:
                    self.trajectory[i].append(best)

    # --- 5. the rest ------------------------------------------------------------------------------------------------

    def spend_rest(self) -> None:
        """The calls the phases before left, on each target's best-ranked allowed candidates not answered yet; the
        final call too where the pick so far (`picks`) was answered here (the final pick is then a cache hit)."""
        if not self.config.spend_all or self.config.budget == 1:
            return
        rows = [
            sorted(
                (c for c in row if self.allowed(c) and math.isnan(c.achieved_cosine)),
                key=predicted_or_lowest,
                reverse=True,
            )
            for row in self.history
        ]
        picks = self.picks()  # a pick answered here frees the final call; a known one keeps it for its answer
        self.spend(rows, [left + (p is not None and p.prompt in m) for left, p, m in zip(self.left, picks, self.memo)])

    # --- 6. final pick ----------------------------------------------------------------------------------------------

    def final_pick(self) -> list[InversionResult]:
        """The best real cosine, made fluent (`fluent`, budget > 1), or the one-call rules (budget 1); the final prompt
        is answered (a cache hit unless it is the one call) and the results are made."""
        finals = [self.one_call(i) for i in range(self.n)] if self.config.budget == 1 else self.picks()
        if any(f is None for f in finals):
            missing = [i for i, f in enumerate(finals) if f is None]
            held = sum(len(self.history[i]) for i in missing)
            cause = (
                "every candidate copies more than the clean line: pass clean=False for the pasting track"
                if held
                else "no answer index, no stored outputs and no rewrite: load 02_pinecone's index or store, or the "
                "policy (use_policy=True)"
            )
            raise ValueError(f"Targets {missing[:5]} have no prompt to answer: {cause}.")
        self.inverter.answer([[f] for f in finals], self.targets, self.memo, self.reward)
        over = [i for i, answered in enumerate(self.memo) if len(answered) > self.config.budget]
        if over:  # a bug, not a user's error: every phase spends within `left` and the final pick is payable
            raise RuntimeError(f"Targets {over[:5]} spent more than budget={self.config.budget} environment calls.")
        results = []
        for i, final in enumerate(finals):
            fill(self.history[i], self.memo[i])
            if not self.trajectory[i] or self.trajectory[i][-1] is not final:
                self.trajectory[i].append(final)
            results.append(
                InversionResult.of(
                    final, len(self.memo[i]), "search", self.history[i], self.trajectory[i], self.reading[i]
                )
            )
        return results

    def picks(self) -> list[Candidate | None]:
        """Per target, what the search would return now (budget > 1): the best real cosine, made fluent."""
        finals = [self.best(i) for i in range(self.n)]
        return finals if any(f is None for f in finals) else self.fluent(finals)

    def best(self, i: int) -> Candidate | None:
        """`best_known`; with none known, the best-ranked allowed, `payable` rewrite."""
        known = self.best_known(i)
        if known is not None:
            return known
        return max(
            (c for c in self.history[i] if self.allowed(c) and self.payable(i, c)),
            key=predicted_or_lowest,
            default=None,
        )

    def payable(self, i: int, candidate: Candidate) -> bool:
        """Whether target i can return `candidate` within its budget: answered already, or a call left to answer it
        (a known prompt's cosine is the index's, but returning it costs the call that answers it)."""
        return candidate.prompt in self.memo[i] or len(self.memo[i]) < self.config.budget

    def fluent(self, finals: list[Candidate]) -> list[Candidate]:
        """Per target, the most fluent (`Inverter.fluency`) allowed prompt whose real cosine lies within
        `fluency_margin` of the final's, among the `payable` ones. Perplexities are computed once, for the targets
        with a choice."""
        margin = self.config.fluency_margin
        windows = [
            [
                c
                for c in self.history[i]
                if self.allowed(c) and self.payable(i, c) and c.achieved_cosine >= final.achieved_cosine - margin
            ]
            if not math.isnan(final.achieved_cosine)
            else []
            for i, final in enumerate(finals)
        ]
        asked = sorted({c.prompt for window in windows if len(window) > 1 for c in window} - set(self.perplexity))
        if asked:
            self.perplexity.update(zip(asked, self.inverter.fluency(asked)))
        return [
            min(window, key=lambda c: (self.perplexity[c.prompt], -c.achieved_cosine)) if len(window) > 1 else final
            for window, final in zip(windows, finals)
        ]

    def one_call(self, i: int) -> Candidate | None:
        """Budget 1: the policy's greedy rewrite; where it wrote a prompt already known (a copy adds nothing), or
        without the policy, the best known prompt. A pasting prompt replaces it when its composed text lies its
        margin nearer than the best known answer (echo's rule asked first)."""
        known = self.best_known(i)
        pick = self.rewrites[i][0] if self.rewrites[i] else known or self.best(i)
        best_real = real_or_lowest(known) if known is not None else -np.inf
        config, sent = self.config, None
        if config.echo and self.echoes[i] and self.texts[i].cosine - config.echo_margin > best_real:
            sent = self.echoes[i][0]
        elif config.ground and self.firsts[i] and self.texts[i].cosine - config.ground_margin > best_real:
            sent = self.firsts[i]
        if sent is not None:
            pick = next(c for c in self.history[i] if c.prompt == sent)
        return pick


def _check_index_fits(inverter, answer_tokens: int) -> None:
    """Refuse an answer index built with another answer length: its cosines are not the ones the search measures."""
    index = inverter.index
    if index is None:
        return
    from e2p_lib.answer_index import answer_namespace

    expected = answer_namespace(inverter.environment, inverter.embedder, answer_tokens)
    if index.namespace != expected:
        raise ValueError(
            f"The answer index {index.namespace!r} was not built for this environment, embedder and "
            f"answer_tokens={answer_tokens} (that index would be {expected!r}): pass the answer_tokens it was built "
            "with (02_pinecone's answer_tokens), or rebuild it with 02."
        )


def _prompts(rows: list[list[Candidate]]) -> list[list[str]]:
    return [[c.prompt for c in row] for row in rows]


def _extended(prompt: str, known: list[Candidate]) -> Candidate:
    """The known candidate `prompt` was made from: the longest it begins with (topic templates start with it)."""
    return max((c for c in known if prompt.startswith(c.prompt)), key=lambda c: len(c.prompt))
