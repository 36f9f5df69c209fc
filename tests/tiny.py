"""Tiny real models for fast tests: SmolLM2's architecture and real tokenizer, 2 layers of width 32, random weights."""

from __future__ import annotations

import numpy as np
import torch

from e2p_lib.models.policy import PolicyConfig, PromptPolicy, _prepare_lm

DIMS = 12  # target vector size in unit tests (MiniLM's 384 is not needed to test the plumbing)


def tiny_policy(tokenizer, finetune: str = "full", seed: int = 0, embedding_dim: int = DIMS) -> PromptPolicy:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    lm = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            tie_word_embeddings=True,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=2,
        )
    )
    config = PolicyConfig(
        embedding_dim=embedding_dim,
        prefix_tokens=3,
        mapper_hidden=16,
        finetune=finetune,
        max_prompt_tokens=12,
        lora_rank=4,
    )
    return PromptPolicy(config, _prepare_lm(lm, config), tokenizer)


def unit_vectors(n: int, dims: int = DIMS, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, dims)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)
