"""The performance run's plumbing (no timing assertions: speed is measured, not asserted), the
sampler behind ``Policy.act``, and the absence of host reads in the fast rollout loop."""
from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import build_tiny_lm
from tokengym.agents.policy import Policy, sample
from tokengym.benchmarks.perf import run_perf
from tokengym.benchmarks.perf_harness import ZeroReward, count_host_reads, make_env
from tokengym.lm.cached_lm import CachedLM, positions_from_mask, takes_prepared_mask
from tokengym.lm.loading import EMBEDDED_MODEL_DIR

B, P, T = 4, 5, 6


def numbers(tree, path=""):
    """Every (path, number) in a JSON tree; booleans are flags, not figures."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from numbers(value, f"{path}.{key}")
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            yield from numbers(value, f"{path}[{i}]")
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        yield path, tree


@pytest.mark.slow
def test_quick_perf_run_writes_every_figure(tmp_path, one_thread):
    # one_thread keeps the quick run well under a minute on a shared CPU (the memory run's child
    # process takes the same thread count).
    have_embedded = (EMBEDDED_MODEL_DIR / "config.json").exists()
    models = ("embedded", "gpt2-small-random") if have_embedded else ("gpt2-small-random",)
    results = run_perf(tmp_path, quick=True, models=models, batches=(1, 4), progress=False)

    saved = json.loads((tmp_path / "perf.json").read_text())
    assert saved == json.loads(json.dumps(results))
    assert (tmp_path / "rollout.png").stat().st_size > 0 and (tmp_path / "cost_growth.png").stat().st_size > 0
    for model in models:
        for batch in ("1", "4"):
            cell = saved["rollout"][model][batch]
            assert len(cell["env_seconds"]) == len(cell["generate_seconds"]) > 0
            assert cell["ratio"] > 0 and cell["env_tokens_per_s"] > 0 and cell["generate_tokens_per_s"] > 0
            kv = saved["memory"]["kv_cache"][model][batch]
            assert kv["bytes_per_token"] >= kv["min_bytes_per_token"] > 0
        assert saved["kl_shaped"][model]["ratio"] > 0
    growth = saved["cost_growth"]
    assert len(growth["contexts"]) == len(growth["cached_seconds_per_token"]) == len(growth["uncached_seconds_per_token"])
    assert growth["cached_growth"] > 0 and growth["uncached_growth"] > 0
    for agent in ("ppo", "grpo"):
        assert saved["update"][agent]["tokens_per_s"] > 0 and saved["update"][agent]["tokens"] > 0
    assert saved["memory"]["training"]["peak_rss_bytes"] > 0
    # LoRA trains only adapters and shares π_ref with the base: full fine-tuning holds at least one
    # more float32 copy of every weight (gradients; also two Adam moments and π_ref's copy)
    lora = saved["memory"]["lora_vs_full"]
    full_params = lora["full"]["trainable_parameters"]
    assert lora["lora8"]["trainable_parameters"] < full_params / 100
    assert lora["full"]["peak_rss_bytes"] - lora["lora8"]["peak_rss_bytes"] > 4 * full_params
    assert lora["ratio"] == saved["summary"]["lora_over_full_peak_memory"] < 1
    assert saved["memory"]["rollout_storage"]["bytes_per_token"] > 0
    assert set(saved["host_reads"]) == {"fast_path", "kl_shaped", "padded_prompts"}
    # FSDP over 2 ranks: each holds half the parameter, gradient and Adam bytes (counted from its shards)
    fsdp = saved["fsdp"]
    assert fsdp["training_state_ratio"] == saved["summary"]["fsdp_training_state_ratio"] == pytest.approx(0.5, abs=1e-3)
    assert len(fsdp["sharded"]["rollout_seconds"]["gathered"]) == len(fsdp["sharded"]["rollout_seconds"]["sharded"]) > 0
    assert set(fsdp["peak_memory_ratio"]) == {"rollout", "update"}
    assert set(saved["summary"]) >= {"rollout_ratio_min", "cost_growth", "kl_shaped_ratio", "rescore_saved", "host_reads_per_step_fast_path"}
    for path, value in numbers(saved):
        assert math.isfinite(value) and value >= 0, path


def test_sample_draws_in_proportion_to_the_probabilities():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05, 0.0]).repeat(100_000, 1)  # (N, 5), unnormalised is fine too
    draws = sample(probs * 3.0, torch.Generator().manual_seed(0))  # (N,)
    frequencies = torch.bincount(draws, minlength=5).double() / len(draws)
    assert frequencies[4] == 0  # a zero-probability token is never drawn
    assert torch.allclose(frequencies, probs[0].double(), atol=6e-3)  # σ ≤ 1.6e-3 at N = 1e5


def test_a_rank_samples_its_rows_of_the_global_batch():
    """With the same generator state, rank r of N draws exactly rows r·B … (r+1)·B−1 of what one
    process draws for the N·B rows (the data-parallel sampler)."""
    probs = torch.rand(12, 50, generator=torch.Generator().manual_seed(2))  # (N·B, V), N = 3, B = 4
    whole = sample(probs, torch.Generator().manual_seed(5))
    for rank in range(3):
        rows = slice(4 * rank, 4 * rank + 4)
        assert torch.equal(sample(probs[rows], torch.Generator().manual_seed(5), shard=(rank, 3)), whole[rows])
    assert not torch.equal(sample(probs[4:8], torch.Generator().manual_seed(5)), whole[4:8])  # unsharded: rank 0's noise


def test_sample_is_reproducible_and_greedy_on_a_point_mass():
    probs = torch.rand(8, 100, generator=torch.Generator().manual_seed(1))
    first = sample(probs, torch.Generator().manual_seed(3))
    assert torch.equal(first, sample(probs, torch.Generator().manual_seed(3)))
    point = torch.zeros(8, 100).scatter_(1, torch.arange(8)[:, None] * 7, 1.0)  # row i: all mass on 7i
    assert torch.equal(sample(point, torch.Generator().manual_seed(0)), torch.arange(8) * 7)


def tiny_causal_lm(kind: str, attn_implementation: str):
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    if kind == "gpt2":
        config = GPT2Config(vocab_size=32, n_positions=64, n_embd=32, n_layer=2, n_head=2, pad_token_id=0,
                            attn_implementation=attn_implementation)
        build = GPT2LMHeadModel
    else:
        config = LlamaConfig(vocab_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                             pad_token_id=0, attn_implementation=attn_implementation)
        build = LlamaForCausalLM
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build(config).eval()


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_prepared_step_mask_gives_the_2d_mask_logits(kind, attn_implementation):
    # CachedLM.step hands these models a ready 4D mask (no host read in transformers' mask
    # builder); with left padding it must give exactly what the 2D mask and teacher forcing give.
    model = tiny_causal_lm(kind, attn_implementation)
    assert takes_prepared_mask(model)
    lengths, width, new = [5, 2, 1], 5, 6
    ids = torch.randint(1, 32, (3, width + new), generator=torch.Generator().manual_seed(0))  # (B, P+T)
    mask = torch.ones_like(ids, dtype=torch.bool)  # (B, P+T)
    for row, n in enumerate(lengths):
        mask[row, : width - n] = False
    stepped = {}
    for prepared in (True, False):
        lm = CachedLM(model)
        lm.prepared_mask = prepared
        logits = [lm.prefill(ids[:, :width], mask[:, :width])]
        logits += [lm.step(ids[:, width + t]) for t in range(new - 1)]
        stepped[prepared] = torch.stack(logits, 1)  # (B, T, V)
    with torch.no_grad():
        forced = model(input_ids=ids, attention_mask=mask.long(), position_ids=positions_from_mask(mask)).logits
    torch.testing.assert_close(stepped[True], stepped[False], rtol=0, atol=0)
    torch.testing.assert_close(stepped[True], forced[:, width - 1 : -1], rtol=1e-5, atol=1e-5)


def fast_env(model, device="cpu"):
    prompts = torch.randint(1, model.config.vocab_size, (B, P), generator=torch.Generator().manual_seed(0)).tolist()
    return make_env(model.to(device), prompts, T, device, reward=ZeroReward())


def play(env, policy, generator):
    for t in range(T):
        step = policy.act(generator)
        env.step(step.actions, logprobs=step.logprobs)
        if t + 1 < T:
            policy.advance(step.actions)


def test_fast_path_step_loop_reads_nothing_on_the_host():
    # CPU stand-in for torch.cuda.set_sync_debug_mode("error"): .item(), .tolist(), if tensor, ...
    # raise inside the step loop (transformers' own checks included). Reset and prefill may read.
    model = build_tiny_lm()
    env, policy = fast_env(model), Policy(model)
    obs, _ = env.reset(seed=0)
    policy.begin(obs["input_ids"][:, :P], obs["attention_mask"][:, :P].bool())
    with count_host_reads(fail=True):
        play(env, policy, torch.Generator().manual_seed(0))
    assert bool(env.all_done)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fast_path_rollout_never_synchronises_cuda():
    model = build_tiny_lm()
    env, policy = fast_env(model, "cuda"), Policy(model)
    generator = torch.Generator(device="cuda").manual_seed(0)
    for sync_mode in (0, "error"):  # a warm-up rollout first: allocator and kernels settle
        obs, _ = env.reset(seed=0)
        policy.begin(obs["input_ids"][:, :P], obs["attention_mask"][:, :P].bool())  # may sync once
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode(sync_mode)
        try:
            play(env, policy, generator)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    assert bool(env.all_done)
