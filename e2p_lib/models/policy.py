"""The prompt policy: a language model that writes a prompt for a target embedding.

SmolLM2-135M-Instruct is conditioned on the target vector through a small mapping network that turns it into
`prefix_tokens` soft tokens (ClipCap, Mokady et al. 2021; vec2text conditions its corrector the same way). The soft
tokens sit in the user turn of SmolLM2's own chat format, so the instruction-tuned model keeps writing fluent text:

    <|im_start|>system\\n{system}<|im_end|>\\n<|im_start|>user\\n[k soft tokens]<|im_end|>\\n<|im_start|>assistant\\n
    {prompt}<|im_end|>

Everything before `{prompt}` (the *context*) has the same length for every target, so batches need no padding on the
left: generation and log-probabilities run on plain (B, C + T) tensors.

Fine-tuning modes (`PolicyConfig.finetune`): "lora" (adapters on the attention projections, via `peft`; the base
weights stay frozen, so the RL stage gets its reference model for free by disabling the adapters), "full" (every
weight), or "prefix" (the mapping network only). The mapping network always trains.

    >>> policy = PromptPolicy.from_pretrained_base(PolicyConfig(embedding_dim=384))
    >>> policy.generate(target_vectors, temperature=0.0)          # greedy prompts, one per row
    >>> policy.save("data/models/policy-sft"); PromptPolicy.load("data/models/policy-sft")

Outline: PolicyConfig -> PrefixMapper -> PromptPolicy (build, context, generate, log-probs, loss, save/load).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from trl.trainer.utils import entropy_from_logits, selective_log_softmax

from e2p_lib.atomic import sweep_staging
from e2p_lib.config import POLICY_CONFIG_FILE
from e2p_lib.lm.smollm import load_smollm2

FINETUNE_MODES = ("lora", "full", "prefix")
MAPPER_FILE = "mapper.pt"


@dataclass
class PolicyConfig:
    """How the policy is conditioned and which weights train.

    Parameters that control the conditioning:
        embedding_dim (`int`, defaults to 384): size of the target vectors (384 for MiniLM, 1,024 for OpenAI's
            text-embedding-3-small as e2p uses it). Must match the embedder.
        prefix_tokens (`int`, defaults to 8): soft tokens the target becomes. More carry more detail and cost
            attention time; ClipCap uses 10.
        mapper_hidden (`int`, defaults to 1024): width of the mapping network's hidden layer.
        system_prompt (`str`): the system turn before the soft tokens; it tells the instruct model its job.

    Parameters that control fine-tuning:
        finetune (`str`, defaults to "lora"): "lora", "full" or "prefix" (see the module docstring).
        lora_rank (`int`, defaults to 16), lora_alpha (`int`, defaults to 32), lora_dropout (`float`, 0.05).
        lora_target_modules (`list[str]`): SmolLM2's attention and MLP projections by default.

    Parameters that control generation:
        max_prompt_tokens (`int`, defaults to 64): the longest prompt written (Alpaca prompts: median 14 tokens,
            99th percentile about 100 with their inputs).

    Parameters that control the hypotheses (retrieval conditioning; 0 turns it off):
        hypotheses (`int`, defaults to 0): the most hypotheses shown in the context: known prompts with the cosine
            of their answer to the target (see `Hypothesis`). The policy then edits and combines them.
        hypothesis_tokens (`int`, defaults to 32): each hypothesis prompt is cut to this many tokens.
        answers (`int`, defaults to 0): the most stored answers shown after them: texts near the target (the
            nearest stored outputs, `Hypothesis(kind="answer")`), what the policy's prompt should be answered with.
            Text the LM reads at once, where the soft tokens need training to mean anything.
        answer_tokens (`int`, defaults to 48): each answer is cut to this many tokens.
    """

    embedding_dim: int = 384
    prefix_tokens: int = 8
    mapper_hidden: int = 1024
    system_prompt: str = "You write the instruction that a user gave to an AI assistant."
    finetune: str = "lora"
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    max_prompt_tokens: int = 64
    hypotheses: int = 0
    hypothesis_tokens: int = 32
    answers: int = 0
    answer_tokens: int = 48

    def __post_init__(self):
        if self.finetune not in FINETUNE_MODES:
            raise ValueError(f"finetune={self.finetune!r}; choose one of {FINETUNE_MODES}.")
        for name in (
            "embedding_dim",
            "prefix_tokens",
            "mapper_hidden",
            "max_prompt_tokens",
            "lora_rank",
            "hypothesis_tokens",
            "answer_tokens",
        ):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}.")
        for name in ("hypotheses", "answers"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be 0 or more, got {getattr(self, name)}.")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}.")


@dataclass(frozen=True)
class Hypothesis:
    """What the policy reads about a target: a known prompt and how close its answer landed, cosine(target,
    embed(answer)) (`kind="prompt"`), or a stored answer near the target, with its own cosine (`kind="answer"`)."""

    prompt: str
    cosine: float
    id: str | None = None  # the stored row it came from, if any
    kind: str = "prompt"  # "prompt" (a request) or "answer" (a text near the target)


HYPOTHESES_HEADER = "\nKnown requests, with how close their answers land (0-100):"
ANSWERS_HEADER = "\nAnswers near the one wanted:"
Hypotheses = Sequence[Sequence[Hypothesis]] | None  # one list per target row (None: no hypotheses anywhere)


class PrefixMapper(nn.Module):
    """Target vector (B, d) -> soft tokens (B, k, H): an MLP, then LayerNorm so the soft tokens start at the scale
    of real token embeddings (the affine weight is initialised to their standard deviation)."""

    def __init__(self, embedding_dim: int, hidden: int, prefix_tokens: int, model_dim: int, token_std: float):
        super().__init__()
        self.prefix_tokens, self.model_dim = prefix_tokens, model_dim
        self.net = nn.Sequential(
            nn.Linear(embedding_dim, hidden), nn.GELU(), nn.Linear(hidden, prefix_tokens * model_dim)
        )
        self.norm = nn.LayerNorm(model_dim)
        with torch.no_grad():
            self.norm.weight.fill_(token_std)

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        return self.norm(self.net(vectors).view(-1, self.prefix_tokens, self.model_dim))  # (B, k, H)


class PromptPolicy(nn.Module):
    """SmolLM2 + PrefixMapper: target embeddings in, prompts out."""

    def __init__(self, config: PolicyConfig, lm, tokenizer):
        super().__init__()
        self.config, self.lm, self.tokenizer = config, lm, tokenizer
        embeddings = lm.get_input_embeddings().weight
        self.mapper = PrefixMapper(
            config.embedding_dim,
            config.mapper_hidden,
            config.prefix_tokens,
            embeddings.shape[1],
            float(embeddings.detach().std()),
        ).to(embeddings.device)
        self.end_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
        # The context around the soft tokens, as token ids: (head, tail); see the module docstring.
        marker = "\x00SOFT\x00"
        text = tokenizer.apply_chat_template(
            [{"role": "system", "content": config.system_prompt}, {"role": "user", "content": marker}],
            tokenize=False,
            add_generation_prompt=True,
        )
        head, tail = text.split(marker)
        self.register_buffer(
            "head_ids", torch.tensor(tokenizer(head, add_special_tokens=False)["input_ids"]), persistent=False
        )
        self.register_buffer(
            "tail_ids", torch.tensor(tokenizer(tail, add_special_tokens=False)["input_ids"]), persistent=False
        )

    # --- building -------------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained_base(cls, config: PolicyConfig, device: str = "auto") -> PromptPolicy:
        """A fresh policy on SmolLM2-135M-Instruct, with the weights that `config.finetune` trains unfrozen."""
        lm, tokenizer = load_smollm2(device=device)
        return cls(config, _prepare_lm(lm, config), tokenizer)

    @property
    def device(self) -> torch.device:
        return self.head_ids.device

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    # --- the context: [head tokens][soft tokens][hypothesis tokens][tail tokens] -----------------------------

    def hypothesis_ids(self, hypotheses: Sequence[Hypothesis] | None) -> list[int]:
        """Token ids of what is shown for one target: a header, then one line "72: prompt" per known prompt, at most
        `config.hypotheses`, each cut to `config.hypothesis_tokens` tokens; then, with `config.answers`, a second
        header and one line "- text" per stored answer, each cut to `config.answer_tokens` tokens."""
        given = list(hypotheses or [])
        encode = self._encode
        ids: list[int] = []
        prompts = [h for h in given if h.kind == "prompt"][: self.config.hypotheses]
        if prompts:
            ids += encode(HYPOTHESES_HEADER)
            for h in prompts:
                ids += encode(f"\n{round(100 * max(float(h.cosine), 0.0))}: ")
                ids += encode(h.prompt)[: self.config.hypothesis_tokens]
        answers = [h for h in given if h.kind == "answer"][: self.config.answers]
        if answers:
            ids += encode(ANSWERS_HEADER)
            for h in answers:
                ids += encode("\n- ") + encode(h.prompt)[: self.config.answer_tokens]
        return ids

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def context_embeddings(self, target_vectors, hypotheses: Hypotheses = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H) input embeddings of each target's context and its (B, C) attention mask.

        Without hypotheses every context has the same length; with them, rows are left-padded to the longest
        (SmolLM2's rotary positions are relative, so the padding does not change what a row sees).
        """
        target_vectors = self._as_tensor(target_vectors)
        batch = target_vectors.shape[0]
        if hypotheses is not None and len(hypotheses) != batch:
            raise ValueError(
                f"Got hypotheses for {len(hypotheses)} targets but {batch} target vectors: pass one "
                "list (possibly empty) per target."
            )
        embed = self.lm.get_input_embeddings()
        soft = self.mapper(target_vectors)
        head, tail = embed(self.head_ids), embed(self.tail_ids)
        middles = [self.hypothesis_ids(hypotheses[i] if hypotheses is not None else None) for i in range(batch)]
        width = max(len(m) for m in middles)
        pad = embed(torch.tensor([self.tokenizer.pad_token_id], device=self.device))[0]
        rows, masks = [], []
        for i, middle in enumerate(middles):
            parts = [head, soft[i].to(head.dtype)]
            if middle:
                parts.append(embed(torch.tensor(middle, device=self.device)))
            parts.append(tail)
            gap = width - len(middle)
            rows.append(torch.cat([pad.expand(gap, -1), *parts], dim=0))
            masks.append(
                torch.cat([torch.zeros(gap, dtype=torch.long), torch.ones(rows[-1].shape[0] - gap, dtype=torch.long)])
            )
        return torch.stack(rows), torch.stack(masks).to(self.device)

    def _as_tensor(self, vectors) -> torch.Tensor:
        vectors = torch.as_tensor(np.asarray(vectors, dtype=np.float32) if not torch.is_tensor(vectors) else vectors)
        if vectors.ndim != 2 or vectors.shape[1] != self.config.embedding_dim:
            raise ValueError(
                f"Target vectors must have shape (n, {self.config.embedding_dim}); got "
                f"{tuple(vectors.shape)}. Use the embedder the policy was trained with."
            )
        return vectors.to(self.device, torch.float32)

    # --- generation -----------------------------------------------------------------------------------------

    @torch.no_grad()
    def generate_ids(
        self,
        target_vectors,
        temperature: float = 0.0,
        top_p: float = 1.0,
        num_return_sequences: int = 1,
        max_new_tokens: int | None = None,
        seed: int | None = None,
        hypotheses: Hypotheses = None,
        return_logprobs: bool = False,
        greedy_first: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Prompt token ids (B * num_return_sequences, T), padded after `<|im_end|>` with the pad id.

        temperature 0 is greedy (and num_return_sequences must then be 1). Rows for one target are adjacent; with
        `greedy_first`, the first of them is the greedy prompt and the rest are sampled, from one reading of the
        context. `max_new_tokens` is at most the policy's cap, `config.max_prompt_tokens` (it never learned longer
        prompts). With `return_logprobs`, also the (B * num_return_sequences, T) log-probability of each written
        token under the policy's own (untempered) distribution, from the logits generation computed anyway: what
        `token_logprobs` would recompute, without a second forward pass. Positions after `<|im_end|>` hold 0;
        callers mask them.
        """
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}.")
        if temperature == 0 and num_return_sequences != 1:
            raise ValueError(
                "Greedy decoding (temperature=0) gives one prompt per target; set temperature > 0 to sample several."
            )
        if seed is not None:
            torch.manual_seed(seed)
        context, mask = self.context_embeddings(target_vectors, hypotheses)
        greedy = torch.full((len(context) * num_return_sequences,), temperature == 0, device=self.device)
        if greedy_first:
            greedy[::num_return_sequences] = True
        cap = self.config.max_prompt_tokens
        was_training = self.training
        self.eval()
        try:
            ids, logprobs = self._decode(
                context,
                mask,
                num_return_sequences,
                greedy,
                min(max_new_tokens or cap, cap),
                temperature,
                top_p,
                return_logprobs,
            )
        finally:
            self.train(was_training)
        return (ids, logprobs) if return_logprobs else ids

    def _decode(
        self, context, mask, repeats: int, greedy, steps: int, temperature: float, top_p: float, with_logprobs: bool
    ):
        """Token by token from each context's key/value cache (read once per target); a row leaves the batch when
        it writes `<|im_end|>`, so each step costs only the prompts still being written. By hand because
        transformers' `generate` computes every row until the longest ends (prompts average well under half the
        cap), and its continuous batching takes token ids, not the soft tokens' embeddings. Sampling is
        `generate`'s: its temperature and top-p warpers, then one multinomial draw per sampled row. Log-probabilities
        (a log-softmax over the vocabulary per row and step) only `with_logprobs`."""
        from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

        warp = LogitsProcessorList()
        if temperature > 0 and temperature != 1.0:
            warp.append(TemperatureLogitsWarper(temperature))
        if top_p < 1.0:
            warp.append(TopPLogitsWarper(top_p))
        cache = self.context_cache(context, mask, repeats)
        inputs = context[:, -1:].repeat_interleave(repeats, dim=0)
        mask = mask.repeat_interleave(repeats, dim=0)
        position = mask.sum(-1, keepdim=True) - 1  # the last context position, as `generate` numbers left padding
        rows = len(inputs)
        ids = torch.full((rows, steps), self.tokenizer.pad_token_id, dtype=torch.long, device=self.device)
        logprobs = torch.zeros((rows, steps), device=self.device)
        live = torch.arange(rows, device=self.device)  # the rows still writing, by their place in `ids`
        embed = self.lm.get_input_embeddings()
        for step in range(steps):
            out = self.lm(inputs_embeds=inputs, attention_mask=mask, position_ids=position, cache=cache, use_cache=True)
            logits = out.logits[:, -1].float()
            token = logits.argmax(-1)
            sampled = ~greedy[live]
            if sampled.any():
                scores = warp(None, logits[sampled])
                token[sampled] = torch.multinomial(scores.softmax(-1), num_samples=1).squeeze(1)
            ids[live, step] = token
            if with_logprobs:
                logprobs[live, step] = selective_log_softmax(logits, token)
            going = token != self.end_id
            if not going.any():
                return ids[:, : step + 1], logprobs[:, : step + 1]
            if not going.all():
                keep = going.nonzero().squeeze(1)
                cache.batch_select_indices(keep)
                live, token, mask, position = live[keep], token[keep], mask[keep], position[keep]
            inputs = embed(token)[:, None]
            mask = torch.cat([mask, mask.new_ones(len(mask), 1)], dim=1)
            position = position + 1
        return ids, logprobs

    def context_cache(self, context: torch.Tensor, mask: torch.Tensor, repeats: int):
        """The key/value cache of each context but its last position, repeated `repeats` times per row: decoding
        starts from it at that last position, instead of reading every context `repeats` times."""
        from transformers import DynamicCache

        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # as `generate` numbers left-padded rows
        cache = DynamicCache(config=self.lm.config)
        self.lm(
            inputs_embeds=context[:, :-1],
            attention_mask=mask[:, :-1],
            position_ids=positions[:, :-1],
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        if repeats > 1:
            cache.batch_repeat_interleave(repeats)
        return cache

    @contextlib.contextmanager
    def merged_lora(self) -> Iterator[None]:
        """Within this block the LoRA adapters are merged into the base weights: one matmul per projection
        instead of three, for rollouts (no gradients). Merging works on copies, so the base weights come back bit
        for bit afterwards (unmerging in place would leave rounding behind, step after step). Not LoRA: no-op."""
        if self.config.finetune != "lora" or not hasattr(self.lm, "merge_adapter"):
            yield
            return
        from peft.tuners.lora import LoraLayer

        layers = [m for m in self.lm.modules() if isinstance(m, LoraLayer)]
        originals = [m.get_base_layer().weight.data for m in layers]
        with torch.no_grad():
            self.lm.merge_adapter(safe_merge=True)  # safe_merge: the merged weights are new tensors
        try:
            yield
        finally:
            with torch.no_grad():
                self.lm.unmerge_adapter()
                for layer, weight in zip(layers, originals):
                    layer.get_base_layer().weight.data = weight

    def decode(self, ids: torch.Tensor) -> list[str]:
        return [t.strip() for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]

    def generate(self, target_vectors, temperature: float = 0.0, **kwargs) -> list[str]:
        """Prompts for each target (see `generate_ids` for the options)."""
        return self.decode(self.generate_ids(target_vectors, temperature=temperature, **kwargs))

    # --- scoring: teacher forcing over [context][prompt tokens] --------------------------------------------

    def completion_mask(self, ids: torch.Tensor) -> torch.Tensor:
        """1 for each prompt token up to and including the first `<|im_end|>`, 0 after it: (B, T)."""
        is_end = (ids == self.end_id).long()
        ended_before = torch.cumsum(is_end, dim=1) - is_end  # ends strictly before this position
        return (ended_before == 0).long()

    def token_logprobs(
        self,
        target_vectors,
        ids: torch.Tensor,
        mask: torch.Tensor | None = None,
        with_entropy: bool = False,
        hypotheses: Hypotheses = None,
        contexts=None,
    ):
        """Log-probability of each prompt token given the target (B, T) (and the per-token entropy, if asked).

        `ids` are prompt tokens as `generate_ids` returns them; positions where `mask` is 0 are padding and are
        fed as `<|im_end|>` so they cost nothing but a few FLOPs; callers must mask them out. `contexts` (B ints):
        the row of `target_vectors` and `hypotheses` each prompt was written for, when several prompts share one:
        each context is then read once (what RL's groups of samples per target save); None: one row each.
        """
        mask = self.completion_mask(ids) if mask is None else mask
        context, context_mask = self.context_embeddings(target_vectors, hypotheses)
        fed = torch.where(mask.bool(), ids, torch.full_like(ids, self.end_id))
        if contexts is not None:
            logits = self._logits_after_shared_contexts(context, context_mask, fed, mask, contexts)
        else:
            inputs = torch.cat([context, self.lm.get_input_embeddings()(fed)], dim=1)
            attention = torch.cat([context_mask, mask], dim=1)
            # Logits only where they predict a prompt token: the LM head (a 49k-token vocabulary) skips the context.
            logits = self.lm(inputs_embeds=inputs, attention_mask=attention, logits_to_keep=ids.shape[1] + 1).logits
            logits = logits[:, :-1].float()  # (B, T, V): position t predicts token t
        # TRL's helpers avoid materialising a (B, T, V) log-softmax (49k-token vocabulary).
        chosen = selective_log_softmax(logits, fed)
        if not with_entropy:
            return chosen
        with torch.no_grad():
            entropy = entropy_from_logits(logits)
        return chosen, entropy

    def _logits_after_shared_contexts(self, context, context_mask, fed, mask, contexts) -> torch.Tensor:
        """`token_logprobs`' (B, T, V) logits with each distinct context read once: its key/value cache (and the
        logits of its last position, which predict the first token) go to every row written from it, then the
        rows read their own tokens. Gradients flow through the gathered cache into the context."""
        from transformers import DynamicCache

        index = torch.as_tensor(contexts, dtype=torch.long, device=self.device)
        positions = (context_mask.cumsum(-1) - 1).clamp(min=0)  # as `generate` numbers left-padded rows
        cache = DynamicCache(config=self.lm.config)
        first = self.lm(
            inputs_embeds=context,
            attention_mask=context_mask,
            position_ids=positions,
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        ).logits[index]
        if fed.shape[1] == 1:
            return first.float()
        cache.batch_select_indices(index)
        steps = torch.arange(1, fed.shape[1], device=self.device)
        rest = self.lm(
            inputs_embeds=self.lm.get_input_embeddings()(fed[:, :-1]),
            attention_mask=torch.cat([context_mask[index], mask[:, :-1]], dim=1),
            position_ids=positions[index, -1:] + steps,
            cache=cache,
            use_cache=True,
        ).logits
        return torch.cat([first, rest], dim=1).float()

    def tokenize_prompts(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts as training targets: ids (B, T) ending in `<|im_end|>`, right-padded, and their mask."""
        rows = [
            self.tokenizer(p, add_special_tokens=False)["input_ids"][: self.config.max_prompt_tokens - 1]
            + [self.end_id]
            for p in prompts
        ]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.end_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        return ids.to(self.device), mask.to(self.device)

    def supervised_loss(self, target_vectors, prompts: Sequence[str], hypotheses: Hypotheses = None) -> torch.Tensor:
        """Mean cross-entropy of the original prompts given their output embeddings (the SFT objective)."""
        ids, mask = self.tokenize_prompts(prompts)
        logprobs = self.token_logprobs(target_vectors, ids, mask, hypotheses=hypotheses)
        return -(logprobs * mask).sum() / mask.sum()

    # --- persistence ------------------------------------------------------------------------------------------

    def save(self, folder: str | Path, extra: dict | None = None) -> Path:
        """Write config, mapping network and LM weights (the adapters only, for LoRA) to `folder`, atomically."""
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        sweep_staging(folder)  # what a killed save left (a policy folder has one writer: the run's main process)
        staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".part"))
        try:
            (staging / POLICY_CONFIG_FILE).write_text(
                json.dumps({"policy": asdict(self.config), **(extra or {})}, indent=2)
            )
            torch.save(self.mapper.state_dict(), staging / MAPPER_FILE)
            if self.config.finetune != "prefix":
                self.lm.save_pretrained(staging / "lm")  # peft saves only the adapters
            _replace_folder(staging, folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return folder

    @classmethod
    def load(cls, folder: str | Path, device: str = "auto", trainable: bool = False) -> PromptPolicy:
        """Rebuild a saved policy from its folder (the config saved with it says how)."""
        folder = Path(folder)
        if not (folder / POLICY_CONFIG_FILE).is_file():
            raise FileNotFoundError(
                f"No saved policy in {folder} (no {POLICY_CONFIG_FILE}). Train one with 03_sft first."
            )
        config = PolicyConfig(**json.loads((folder / POLICY_CONFIG_FILE).read_text())["policy"])
        lm, tokenizer = load_smollm2(device=device)
        if config.finetune == "lora":
            from peft import PeftModel

            lm = PeftModel.from_pretrained(lm, folder / "lm", is_trainable=trainable)
        elif config.finetune == "full":
            from transformers import AutoModelForCausalLM

            lm = AutoModelForCausalLM.from_pretrained(folder / "lm", dtype=lm.dtype, device_map=lm.device)
        policy = cls(config, lm, tokenizer)
        policy.mapper.load_state_dict(torch.load(folder / MAPPER_FILE, map_location=policy.device))
        for p in policy.parameters():
            p.requires_grad_(False)
        if trainable:
            _set_trainable(policy, config)
        policy.train(trainable)
        return policy


def _prepare_lm(lm, config: PolicyConfig):
    """Freeze or wrap the LM as `config.finetune` says (the mapper is always trainable)."""
    if config.finetune == "lora":
        from peft import LoraConfig, get_peft_model

        return get_peft_model(
            lm,
            LoraConfig(
                r=config.lora_rank,
                lora_alpha=config.lora_alpha,
                lora_dropout=config.lora_dropout,
                target_modules=list(config.lora_target_modules),
                task_type="CAUSAL_LM",
            ),
        )
    for p in lm.parameters():
        p.requires_grad_(config.finetune == "full")
    return lm


def _set_trainable(policy: PromptPolicy, config: PolicyConfig) -> None:
    for p in policy.mapper.parameters():
        p.requires_grad_(True)
    for name, p in policy.lm.named_parameters():
        p.requires_grad_(config.finetune == "full" or (config.finetune == "lora" and "lora_" in name))


def _replace_folder(staging: Path, folder: Path) -> None:
    """Move `staging` to `folder`, replacing an older copy; at every moment one complete copy exists on disk."""
    if folder.exists():
        old = folder.with_name(f".{folder.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
        os.replace(staging, folder)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, folder)
