"""Judge a trained policy against its reference on fresh samples (``tokengym eval --run DIR`` runs it).

Both models continue the same prompts (a seed of their own, not the training one) through the
env's ``reset``/``step``, scored by the env's reward without a KL-shaped reward's penalty (for a
run directory, the task reward alone). For each model:

* ``score``: the mean episode return of the task reward (VADER on Sentiment-v0);
* ``kl``: the sampled sequence KL ``E_y~π[Σ_t log π(y_t|·) − log π_ref(y_t|·)]`` in nats, the
  k1 sum that the KL-shaped reward penalises (0 for the reference, by construction);
* ``distinct_2``: distinct word bigrams over all bigrams of all samples (Li et al. 2016), the
  diversity a mode-collapsed policy loses;
* ``length``: mean tokens per episode.

The verdict compares the two: ``score_gain`` (policy − reference) and ``distinct_2_ratio``
(policy ÷ reference).
"""
from __future__ import annotations

import contextlib
import math
from typing import Any

import torch

__all__ = ["distinct_n", "sample_stats", "evaluate", "EVAL_SEED"]

EVAL_SEED = 20_261_122
"""Default seed of the evaluation prompts and samples: not a training seed."""


def distinct_n(texts: list[str], n: int = 2) -> float:
    """Distinct word ``n``-grams ÷ all word ``n``-grams, pooled over ``texts`` (0 if there are none)."""
    grams = [tuple(words[i:i + n]) for words in (t.split() for t in texts) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


@torch.no_grad()
def sample_stats(env, model: torch.nn.Module, *, episodes: int, seed: int,
                 context: contextlib.AbstractContextManager | None = None) -> dict[str, Any]:
    """Sample ``episodes`` episodes of ``model`` through the vector ``env`` (its reward less any KL
    penalty, its π_ref, its sampling) and return the mean score, sequence KL to ``env.reference``, distinct-2
    and length, with the continuations' texts. ``context``: the model's forward context (autocast,
    or a PEFT model's adapters disabled)."""
    from tokengym.agents.policy import Policy
    from tokengym.benchmarks.episodes import run_episodes

    env = env.unwrapped
    policy = Policy(model, sampling=env.sampling)
    generator = torch.Generator(device=env.device).manual_seed(seed)
    scores, kls, lengths, texts = [], [], [], []
    with context if context is not None else contextlib.nullcontext():
        for batch in range(math.ceil(episodes / env.num_envs)):
            batch_episodes = run_episodes(env, policy, generator, seed=seed if batch == 0 else None)
            mask = batch_episodes.mask  # (B, T) response tokens
            kls.append(torch.where(mask, batch_episodes.logprobs - batch_episodes.ref_logprobs, 0.0).sum(-1))
            scores.append(sum(batch_episodes.components.values()))  # (B,) episode totals
            lengths.append(mask.sum(-1).float())
            if env.tokenizer is not None:
                texts += batch_episodes.texts(env.tokenizer)
    score, kl, length = (torch.cat(x)[:episodes].double() for x in (scores, kls, lengths))
    texts = texts[:episodes]
    return {
        "episodes": int(score.numel()),
        "score": score.mean().item(), "score_std": score.std().item() if score.numel() > 1 else 0.0,
        "kl": kl.mean().item(), "kl_std": kl.std().item() if kl.numel() > 1 else 0.0,
        "distinct_2": distinct_n(texts, 2) if texts else None,
        "length": length.mean().item(),
        "samples": texts[:5],
    }


def evaluate(env, model: torch.nn.Module, *, episodes: int = 256, seed: int = EVAL_SEED,
             context: contextlib.AbstractContextManager | None = None) -> dict[str, Any]:
    """``model`` (π_θ) and ``env.reference`` (π_ref) on the same prompts and random numbers: each
    one's :func:`sample_stats`, the score gain and the distinct-2 ratio."""
    reference = env.unwrapped.reference
    ref = sample_stats(env, reference.model, episodes=episodes, seed=seed, context=reference.context())
    policy = sample_stats(env, model, episodes=episodes, seed=seed, context=context)
    ratio = policy["distinct_2"] / ref["distinct_2"] if policy["distinct_2"] is not None and ref["distinct_2"] else None
    return {"policy": policy, "reference": ref, "score_gain": policy["score"] - ref["score"],
            "kl": policy["kl"], "distinct_2_ratio": ratio, "episodes": episodes, "seed": seed}
