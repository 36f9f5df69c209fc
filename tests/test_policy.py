"""The prompt policy: conditioning, generation, log-probabilities, SFT training, save/load.

Unit tests use a tiny randomly initialised Llama (SmolLM2's architecture, 2 layers of width 32) with SmolLM2's real
tokenizer, so they run in seconds; the save/load round trip and one SFT run use the real SmolLM2-135M weights.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny import tiny_policy, unit_vectors
from trl.trainer.utils import selective_log_softmax

from e2p_lib.models.policy import Hypothesis, PolicyConfig, PromptPolicy
from e2p_lib.train.sft import PolicyTrainingConfig, train_policy


def test_context_has_fixed_length_and_soft_tokens_in_the_user_turn(smollm2_tokenizer):
    policy = tiny_policy(smollm2_tokenizer)
    context, mask = policy.context_embeddings(unit_vectors(5))
    assert context.shape == (5, len(policy.head_ids) + 3 + len(policy.tail_ids), 32)
    assert mask.shape == context.shape[:2] and bool(mask.all())
    head = smollm2_tokenizer.decode(policy.head_ids)
    assert head.endswith("<|im_start|>user\n") and policy.config.system_prompt in head
    assert smollm2_tokenizer.decode(policy.tail_ids) == "<|im_end|>\n<|im_start|>assistant\n"


def test_generation_shapes_masks_and_seeded_sampling(smollm2_tokenizer):
    policy = tiny_policy(smollm2_tokenizer)
    targets = unit_vectors(2)
    ids = policy.generate_ids(targets, temperature=1.0, num_return_sequences=3, max_new_tokens=6, seed=7)
    assert ids.shape[0] == 6 and ids.shape[1] <= 6
    again = policy.generate_ids(targets, temperature=1.0, num_return_sequences=3, max_new_tokens=6, seed=7)
    assert torch.equal(ids, again), "sampling with a seed is reproducible"
    greedy = policy.generate(targets, max_new_tokens=6)
    assert len(greedy) == 2 and all(isinstance(p, str) for p in greedy)
    assert policy.generate_ids(targets, max_new_tokens=100).shape[1] <= policy.config.max_prompt_tokens  # its cap
    with pytest.raises(ValueError, match="set temperature > 0"):
        policy.generate_ids(targets, temperature=0.0, num_return_sequences=2)
    with pytest.raises(ValueError, match=r"shape \(n, 12\)"):
        policy.generate(unit_vectors(2, dims=5))


def test_completion_mask_stops_after_the_first_end_token(smollm2_tokenizer):
    policy = tiny_policy(smollm2_tokenizer)
    end = policy.end_id
    ids = torch.tensor([[5, 6, end, end, end], [5, 6, 7, 8, 9], [end, 3, end, 4, 4]])
    assert policy.completion_mask(ids).tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]


def test_logprobs_match_the_generator_and_gradients_reach_the_mapper(smollm2_tokenizer):
    policy = tiny_policy(smollm2_tokenizer)
    targets = unit_vectors(3)
    ids = policy.generate_ids(targets, max_new_tokens=5)  # greedy: each token is the argmax of its distribution
    logprobs, entropy = policy.token_logprobs(targets, ids, with_entropy=True)
    assert logprobs.shape == ids.shape == entropy.shape
    mask = policy.completion_mask(ids).bool()
    # Greedy tokens are the most likely ones, so their log-prob is the max over the vocabulary (entropy > 0).
    assert torch.all(logprobs[mask] <= 0) and torch.all(entropy[mask] > 0)
    loss = policy.supervised_loss(targets, ["Name three colours.", "Sum 2 and 3.", "Write a haiku."])
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.mapper.parameters())


def test_lora_freezes_the_base_and_trains_adapters_and_mapper(smollm2_tokenizer):
    policy = tiny_policy(smollm2_tokenizer, finetune="lora")
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("mapper.") for n in trainable)
    assert any(n.startswith("mapper.") for n in trainable)


def test_overfitting_a_batch_of_8_lowers_the_loss_by_more_than_90_percent(smollm2_tokenizer):
    policy = tiny_policy(smollm2_tokenizer)
    prompts = [
        "Name three primary colours.",
        "Translate 'cat' into French.",
        "What is 2 + 2?",
        "Write a haiku about rain.",
        "Summarise the plot of Hamlet.",
        "List four planets.",
        "Explain photosynthesis briefly.",
        "Give a synonym for happy.",
    ]
    targets = unit_vectors(8)
    config = PolicyTrainingConfig(
        batch_size=8,
        max_steps=60,
        learning_rate=1e-2,
        mapper_learning_rate=1e-2,
        lr_scheduler="constant",
        warmup_fraction=0.0,
        eval_every_steps=0,
        show_progress=False,
        val_rows=8,
    )
    _, history = train_policy(targets, prompts, targets, prompts, config, policy=policy)
    losses = history.to_frame().query("split == 'train'")["value"].to_numpy()
    assert losses[-1] < 0.1 * losses[0], (losses[0], losses[-1])
    # And the trained policy now writes those prompts from their vectors.
    assert policy.generate(targets[:2], max_new_tokens=12) == prompts[:2]


def test_bad_config_is_refused_before_any_model_loads():
    with pytest.raises(ValueError, match="finetune='adapters'"):
        PolicyConfig(finetune="adapters")
    with pytest.raises(ValueError, match="prefix_tokens must be at least 1"):
        PolicyConfig(prefix_tokens=0)
    with pytest.raises(ValueError, match="mapper_learning_rate must be > 0"):
        PolicyTrainingConfig(mapper_learning_rate=0)


@pytest.mark.slow
def test_sft_checkpoint_resumes_and_saved_policy_generates_identically(tmp_path):
    """Real SmolLM2 + LoRA: 2 steps, resume to 3, save; the reloaded policy's greedy prompts are identical."""
    rng = np.random.default_rng(0)
    vectors = unit_vectors(6, dims=16)
    prompts = [f"Write a sentence about the number {i}." for i in range(6)]
    policy_config = PolicyConfig(embedding_dim=16, prefix_tokens=2, lora_rank=4)
    base = dict(
        batch_size=3,
        learning_rate=1e-3,
        lr_scheduler="constant",
        warmup_fraction=0.0,
        eval_every_steps=0,
        save_every_steps=1,
        show_progress=False,
        val_rows=3,
        output_dir=str(tmp_path),
    )
    train_policy(vectors, prompts, vectors, prompts, PolicyTrainingConfig(max_steps=2, **base), policy_config)
    policy, history = train_policy(
        vectors, prompts, vectors, prompts, PolicyTrainingConfig(max_steps=3, **base), policy_config
    )
    steps = history.to_frame().query("split == 'train'")["step"].tolist()
    assert steps == [1, 2, 3], "the resumed run continued the same history"
    reloaded = PromptPolicy.load(tmp_path / "policy", device="cpu")
    targets = vectors[:2] + 0.01 * rng.standard_normal((2, 16)).astype(np.float32)
    assert reloaded.generate(targets, max_new_tokens=16) == policy.generate(targets, max_new_tokens=16)
    with pytest.raises(ValueError, match="another PolicyConfig"):
        train_policy(
            vectors,
            prompts,
            vectors,
            prompts,
            PolicyTrainingConfig(max_steps=4, **base),
            PolicyConfig(embedding_dim=16, prefix_tokens=3, lora_rank=4),
        )


def hypothesis_policy(tokenizer, most: int = 2):
    policy = tiny_policy(tokenizer)
    policy.config.hypotheses = most
    return policy


def test_hypotheses_enter_the_context_left_padded(smollm2_tokenizer):
    policy = hypothesis_policy(smollm2_tokenizer)
    rows = [
        [
            Hypothesis("Name a fruit.", 0.62),
            Hypothesis("Write a long poem about the sea and the wind.", 0.4),
            Hypothesis("never shown: beyond config.hypotheses", 0.1),
        ],
        [],
    ]
    context, mask = policy.context_embeddings(unit_vectors(2), rows)
    shown = policy.hypothesis_ids(rows[0])
    assert len(shown) > 0 and policy.hypothesis_ids([]) == []
    text = smollm2_tokenizer.decode(shown)
    assert "62: Name a fruit." in text and "40: Write a long poem" in text and "never shown" not in text
    base = len(policy.head_ids) + 3 + len(policy.tail_ids)
    assert context.shape[1] == base + len(shown)
    assert mask[0].sum() == base + len(shown) and mask[1].sum() == base  # row 1 is left-padded
    assert bool((mask[1, : len(shown)] == 0).all())


def test_stored_answers_follow_the_known_prompts_cut_to_their_own_length(smollm2_tokenizer):
    policy = hypothesis_policy(smollm2_tokenizer, most=1)
    policy.config.answers, policy.config.answer_tokens = 1, 4
    row = [
        Hypothesis("An answer about rain falling on the roof all night long.", 0.8, "row-7", kind="answer"),
        Hypothesis("Name a fruit.", 0.62),
        Hypothesis("Second prompt, beyond config.hypotheses.", 0.5),
        Hypothesis("A second answer, beyond config.answers.", 0.7, kind="answer"),
    ]
    text = smollm2_tokenizer.decode(policy.hypothesis_ids(row))
    assert text.index("62: Name a fruit.") < text.index("Answers near the one wanted:\n- An answer about")
    assert "roof" not in text and "Second prompt" not in text and "second answer" not in text  # cut, and the most
    policy.config.answers = 0  # a policy trained without answers never reads them
    assert "An answer" not in smollm2_tokenizer.decode(policy.hypothesis_ids(row))


def test_training_batches_show_fewer_known_prompts_but_every_answer():
    from e2p_lib.train.sft import shown_hypotheses

    rows = [[Hypothesis("p1", 0.5), Hypothesis("p2", 0.4), Hypothesis("a1", 0.9, kind="answer")] for _ in range(64)]
    shown = shown_hypotheses(rows, np.arange(64), most=2, seed=0, step=3)
    assert all(row[-1].prompt == "a1" for row in shown)  # the answer, in every row
    assert {len(row) - 1 for row in shown} == {0, 1, 2}  # 0..2 known prompts, best first
    assert all([h.prompt for h in row[:-1]] == ["p1", "p2"][: len(row) - 1] for row in shown)


def test_hypotheses_change_the_prompt_distribution_and_padding_does_not(smollm2_tokenizer):
    policy = hypothesis_policy(smollm2_tokenizer)
    targets = unit_vectors(2)
    ids, mask = policy.tokenize_prompts(["Name a fruit.", "Name a fruit."])
    with_hyp = [[Hypothesis("Write a haiku about rain.", 0.5)], [Hypothesis("Write a haiku about rain.", 0.5)]]
    plain = policy.token_logprobs(targets, ids, mask)
    conditioned = policy.token_logprobs(targets, ids, mask, hypotheses=with_hyp)
    assert not torch.allclose(plain, conditioned)
    # a row's log-probs do not depend on how much left padding its batch mates force on it
    mixed = policy.token_logprobs(targets, ids, mask, hypotheses=[with_hyp[0], []])
    torch.testing.assert_close(mixed[1] * mask[1], plain[1] * mask[1], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(mixed[0] * mask[0], conditioned[0] * mask[0], atol=1e-4, rtol=1e-4)


def test_samples_of_a_target_read_its_context_once_and_write_what_a_repeated_context_writes(smollm2_tokenizer):
    policy = hypothesis_policy(smollm2_tokenizer)
    targets = unit_vectors(2)
    rows = [[Hypothesis("Write a long poem about the sea and the wind.", 0.4)], []]  # the second row left-padded
    shared = policy.generate_ids(
        targets,
        temperature=1.0,
        num_return_sequences=3,
        max_new_tokens=6,
        seed=3,
        hypotheses=rows,
        return_logprobs=True,
    )
    # the same sampling stream over each context written out three times (one sequence per row: no shared cache)
    repeated = policy.generate_ids(
        np.repeat(targets, 3, axis=0),
        temperature=1.0,
        max_new_tokens=6,
        seed=3,
        hypotheses=[row for row in rows for _ in range(3)],
        return_logprobs=True,
    )
    assert torch.equal(shared[0], repeated[0])
    mask = policy.completion_mask(shared[0]).bool()
    # tight: a cache written at positions other than generate's (left padding) shifts these by about 4e-4
    torch.testing.assert_close(shared[1][mask], repeated[1][mask], atol=1e-5, rtol=0)


def ending_hook(policy, sizes: list[int]):
    """End each row where the tokens it has read so far are a multiple of 4 (so rows with contexts of other lengths
    end at other steps); record the rows each forward pass computes."""

    def hook(module, args, kwargs, out):
        read = kwargs["attention_mask"].sum(-1)
        sizes.append(len(read))
        out.logits[..., policy.end_id] += 100.0 * (read % 4 == 0)[:, None]
        return out

    return policy.lm.register_forward_hook(hook, with_kwargs=True)


def test_rows_leave_the_batch_when_they_end_and_write_what_transformers_generate_writes(smollm2_tokenizer):
    policy = hypothesis_policy(smollm2_tokenizer)
    targets = unit_vectors(4)
    poem, fruit = Hypothesis("Write a long poem about the sea and the wind.", 0.4), Hypothesis("Name a fruit.", 0.6)
    rows = [[poem], [fruit], [], [poem, fruit]]  # contexts of four lengths, left-padded
    sizes: list[int] = []
    handle = ending_hook(policy, sizes)
    try:
        ids, logprobs = policy.generate_ids(targets, hypotheses=rows, max_new_tokens=12, return_logprobs=True)
        decoded = sizes[1:]  # after the context's pass
        context, mask = policy.context_embeddings(targets, rows)
        reference = policy.lm.generate(
            inputs_embeds=context,
            attention_mask=mask,
            max_new_tokens=12,
            eos_token_id=policy.end_id,
            pad_token_id=policy.tokenizer.pad_token_id,
            do_sample=False,
            top_k=None,
            output_logits=True,
            return_dict_in_generate=True,
        )
    finally:
        handle.remove()
    lengths = policy.completion_mask(ids).sum(1)
    assert len(set(lengths.tolist())) > 2, "the rows end at several steps"
    assert decoded == sorted(decoded, reverse=True) and decoded[-1] < decoded[0] == 4, "finished rows leave"
    assert torch.equal(ids, reference.sequences)
    expected = selective_log_softmax(torch.stack(reference.logits, dim=1).float(), reference.sequences)
    written = policy.completion_mask(ids).bool()
    torch.testing.assert_close(logprobs[written], expected[written], atol=1e-5, rtol=0)
    assert torch.all(logprobs[~written] == 0)


def test_greedy_first_writes_the_greedy_prompt_then_samples_from_one_reading(smollm2_tokenizer):
    policy = hypothesis_policy(smollm2_tokenizer)
    targets = unit_vectors(3)
    rows = [[Hypothesis("Name a fruit.", 0.5)], [], []]
    greedy = policy.generate_ids(targets, hypotheses=rows, max_new_tokens=8)
    mixed = policy.generate_ids(
        targets, temperature=1.0, num_return_sequences=4, greedy_first=True, hypotheses=rows, max_new_tokens=8, seed=1
    )
    assert mixed.shape[0] == 12
    assert policy.decode(mixed[::4]) == policy.decode(greedy)
    sampled = [mixed[i] for i in range(12) if i % 4]
    assert sum(policy.decode(row[None])[0] in policy.decode(greedy) for row in sampled) < len(sampled) // 2


def test_prompts_sharing_a_context_read_it_once_with_the_same_logprobs_and_gradients(smollm2_tokenizer):
    policy = hypothesis_policy(smollm2_tokenizer)
    policy.eval()  # no dropout: both readings must agree
    targets = unit_vectors(3)
    rows = [[Hypothesis("Write a long poem about the sea and the wind.", 0.4)], [], [Hypothesis("Name a fruit.", 0.6)]]
    contexts = [2, 0, 0, 1, 2, 0]  # the prompts of a minibatch, from three contexts, in any order
    ids = policy.generate_ids(
        targets, temperature=1.0, num_return_sequences=2, max_new_tokens=8, seed=5, hypotheses=rows
    )[[4, 0, 1, 2, 5, 0]]

    def read(shared: bool):
        policy.zero_grad()
        if shared:
            logprobs = policy.token_logprobs(targets, ids, hypotheses=rows, contexts=contexts)
        else:
            logprobs = policy.token_logprobs(targets[contexts], ids, hypotheses=[rows[c] for c in contexts])
        mask = policy.completion_mask(ids)
        (logprobs * mask).sum().backward()
        return logprobs.detach() * mask, {n: p.grad.clone() for n, p in policy.named_parameters() if p.requires_grad}

    (once, once_grads), (each, each_grads) = read(shared=True), read(shared=False)
    torch.testing.assert_close(once, each, atol=1e-5, rtol=0)
    for name, grad in once_grads.items():
        torch.testing.assert_close(grad, each_grads[name], atol=1e-4, rtol=1e-3)
    assert all(once_grads[n].abs().sum() > 0 for n in once_grads if n.startswith("mapper.")), "through the cache"


def test_hypotheses_must_match_the_targets(smollm2_tokenizer):
    policy = hypothesis_policy(smollm2_tokenizer)
    with pytest.raises(ValueError, match="one list"):
        policy.context_embeddings(unit_vectors(2), [[Hypothesis("a", 0.1)]])


def test_sft_with_hypotheses_learns_to_copy_the_best_one(smollm2_tokenizer):
    """The retrieval-conditioned policy can learn the simplest edit: write the best hypothesis it is shown."""
    policy = hypothesis_policy(smollm2_tokenizer, most=2)
    prompts = ["Name a fruit.", "List three colours.", "Write a haiku.", "Define gravity."] * 2
    hypotheses = [[Hypothesis(p, 0.7), Hypothesis("Say hello.", 0.2)] for p in prompts]
    targets = unit_vectors(len(prompts), seed=3)
    config = PolicyTrainingConfig(
        max_steps=60,
        batch_size=8,
        learning_rate=1e-2,
        mapper_learning_rate=1e-2,
        lr_scheduler="constant",
        warmup_fraction=0.0,
        eval_every_steps=0,
        show_progress=False,
        val_rows=8,
    )
    before = float(policy.supervised_loss(targets, prompts, hypotheses))
    train_policy(
        targets,
        prompts,
        targets,
        prompts,
        config,
        policy=policy,
        train_hypotheses=hypotheses,
        val_hypotheses=hypotheses,
    )
    assert float(policy.supervised_loss(targets, prompts, hypotheses)) < 0.3 * before
    with pytest.raises(ValueError, match="hypotheses for 1 rows"):
        train_policy(targets, prompts, targets, prompts, config, policy=policy, train_hypotheses=hypotheses[:1])
