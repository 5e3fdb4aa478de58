"""tokengym's GRPO against TRL's ``GRPOTrainer`` on one setup (BENCHMARKS.md, "TRL comparison").

Both sides train the embedded 4M-parameter GPT-2 on the Sentiment-v0 prompt pool with the VADER
compound score of the completion as the only reward, with the same batch (8 prompts × G = 4),
16 new tokens, sampling settings, learning rate, optimizer, clipping and loss::

    OMP_NUM_THREADS=1 tokengym bench --trl-comparison --out benchmarks/results/trl-grpo

For each seed one process runs both trainers **interleaved step by step**: TRL's ``train()`` drives
the loop and a callback runs one tokengym iteration beside each TRL step (before it on even steps,
after it on odd ones), so both sides see the same machine load. Per step it records the wall time of
each side's optimizer step (generation + scoring + update) and the batch's mean reward. After
training, one evaluation function (``model.generate``, 128 fresh completions of exactly 16 tokens
from a fixed, seeded prompt draw) scores both models the same way.

TRL is imported only here, lazily; it is not a dependency of tokengym (``pip install trl``).
"""
from __future__ import annotations

import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

__all__ = ["run_comparison", "run_seed", "evaluate"]

BATCH = 32
GROUP = 4
NEW_TOKENS = 16
LR = 3e-4
MAX_GRAD_NORM = 1.0
EVAL_SAMPLES = 128
WARMUP_STEPS = 2
"""Rounds left out of the timing medians (first-call allocations, lazy imports)."""


def _import_trl():
    try:
        import datasets  # noqa: F401
        import trl
    except ImportError as error:
        from tokengym.lm.errors import UsageError

        raise UsageError(f"--trl-comparison needs TRL and datasets ({error}); install them with "
                         "`pip install 'tokengym[trl]'`") from None
    return trl


@torch.no_grad()
def evaluate(model, tokenizer, prompts: list[str], seed: int, n: int = EVAL_SAMPLES, batch: int = BATCH) -> dict:
    """Mean VADER of ``n`` completions of exactly ``NEW_TOKENS`` tokens sampled at temperature 1
    (no top-k/top-p) from ``n`` prompts drawn with replacement from ``prompts`` by ``seed``."""
    from tokengym.rewards.scorers import VaderSentiment

    scorer = VaderSentiment()
    rng = random.Random(seed)
    chosen = [rng.choice(prompts) for _ in range(n)]
    was_training, side = model.training, tokenizer.padding_side
    model.eval()
    tokenizer.padding_side = "left"
    torch.manual_seed(seed)
    scores, texts = [], []
    try:
        for i in range(0, n, batch):
            enc = tokenizer(chosen[i : i + batch], return_tensors="pt", padding=True)
            out = model.generate(
                **enc, do_sample=True, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, temperature=1.0,
                top_k=0, top_p=1.0, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
            )
            completions = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
            scores += scorer(chosen[i : i + batch], completions)
            texts += completions
    finally:
        model.train(was_training)
        tokenizer.padding_side = side
    return {"vader_mean": statistics.fmean(scores), "n": n, "samples": [[p, t] for p, t in zip(chosen[:3], texts[:3])]}


def _tokengym_agent(seed: int):
    import gymnasium as gym

    import tokengym.envs  # noqa: F401  registers the envs
    from tokengym.agents import GRPO, GRPOConfig

    envs = gym.make_vec(
        "tokengym/Sentiment-v0", num_envs=BATCH, device="cpu", max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
        temperature=1.0, top_k=0, top_p=1.0,
    )
    config = GRPOConfig(
        lr=LR, group_size=GROUP, beta=0.0, clip_eps=0.2, n_epochs=1, n_minibatches=1, scale_rewards=True,
        length_normalization=True, max_grad_norm=MAX_GRAD_NORM, seed=seed,
    )
    return GRPO(envs, config)


def _activation_checkpointing(model) -> bool:
    """Does ``model`` recompute activations? transformers 5 renamed ``is_gradient_checkpointing``
    (deprecated there) to ``is_activation_checkpointing``."""
    if hasattr(model, "is_activation_checkpointing"):
        return bool(model.is_activation_checkpointing)
    return bool(getattr(model, "is_gradient_checkpointing", False))


def run_seed(seed: int, episodes: int, workdir: str) -> dict:
    """Train both sides for ``episodes`` episodes on ``seed``, interleaved; returns the record."""
    trl = _import_trl()
    from datasets import Dataset
    from transformers import TrainerCallback

    from tokengym.envs.prompts import SENTIMENT_PROMPTS
    from tokengym.lm.loading import load_causal_lm, load_tokenizer
    from tokengym.rewards.scorers import VaderSentiment

    steps = episodes // BATCH
    start = time.perf_counter()
    agent = _tokengym_agent(seed)
    tokengym_setup_s = time.perf_counter() - start

    vader = VaderSentiment()
    trl_batch_rewards: list[float] = []

    def vader_reward(prompts, completions, **kwargs):  # TRL's reward-function signature
        scores = vader(prompts, completions)
        trl_batch_rewards.append(statistics.fmean(scores))
        return scores

    trl_lengths: list[float] = []

    start = time.perf_counter()
    tokenizer = load_tokenizer("embedded")
    model = load_causal_lm("embedded", device="cpu", dtype=torch.float32)
    args = trl.GRPOConfig(
        output_dir=workdir, seed=seed, data_seed=seed, max_steps=steps, use_cpu=True, bf16=False, fp16=False,
        gradient_checkpointing=False, learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0,
        optim="adamw_torch", weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8,
        max_grad_norm=MAX_GRAD_NORM, per_device_train_batch_size=BATCH, gradient_accumulation_steps=1,
        num_generations=GROUP, max_completion_length=NEW_TOKENS, generation_kwargs={"min_new_tokens": NEW_TOKENS},
        temperature=1.0, top_k=0, top_p=1.0, beta=0.0, num_iterations=1, epsilon=0.2, loss_type="grpo",
        scale_rewards="group", mask_truncated_completions=False, report_to="none", save_strategy="no",
        dataloader_num_workers=0, disable_tqdm=True,
    )
    dataset = Dataset.from_dict({"prompt": list(SENTIMENT_PROMPTS)})
    trainer = trl.GRPOTrainer(
        model=model, reward_funcs=vader_reward, args=args, train_dataset=dataset, processing_class=tokenizer,
    )
    trl_setup_s = time.perf_counter() - start

    rounds: list[dict] = []

    def tokengym_step() -> tuple[float, float]:
        t0 = time.perf_counter()
        stats = agent.train_iteration()
        return time.perf_counter() - t0, stats["reward"]

    class Interleave(TrainerCallback):
        def __init__(self):
            self.t_begin = self.t_after = None

        def on_step_begin(self, args, state, control, **kwargs):
            k = state.global_step
            record = {"step": k + 1, "trl_between_steps_s": None if self.t_after is None else time.perf_counter() - self.t_after}
            if k % 2 == 0:
                record["tokengym_s"], record["tokengym_reward"] = tokengym_step()
                record["order"] = "tokengym first"
            else:
                record["order"] = "trl first"
            rounds.append(record)
            self.t_begin = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            record = rounds[-1]
            record["trl_s"] = time.perf_counter() - self.t_begin
            record["trl_reward"] = trl_batch_rewards[-1]
            if "tokengym_s" not in record:
                record["tokengym_s"], record["tokengym_reward"] = tokengym_step()
            self.t_after = time.perf_counter()

    trainer.add_callback(Interleave())
    threads = torch.get_num_threads()
    trainer.train()
    if len(trl_batch_rewards) != steps or len(rounds) != steps:
        raise RuntimeError(f"expected {steps} steps, got {len(trl_batch_rewards)} TRL reward calls and {len(rounds)} rounds")
    if agent.episodes != steps * BATCH:
        raise RuntimeError(f"tokengym trained on {agent.episodes} episodes, expected {steps * BATCH}")
    trl_lengths = [m for m in _log_values(trainer, "completions/mean_length")]

    prompts = list(SENTIMENT_PROMPTS)
    eval_seed = 10_000 + seed
    return {
        "seed": seed,
        "episodes": steps * BATCH,
        "steps": steps,
        "torch_threads": threads,
        "trl_activation_checkpointing": _activation_checkpointing(trainer.model),
        "trl_param_dtype": str(next(trainer.model.parameters()).dtype),
        "setup_s": {"tokengym": tokengym_setup_s, "trl": trl_setup_s},
        "rounds": rounds,
        "trl_logged_mean_completion_length": trl_lengths,
        "tokengym_mean_response_tokens": [h["response_tokens"] for h in agent.history],
        "eval": {
            "tokengym": evaluate(agent.policy.model, agent.env.tokenizer, prompts, eval_seed),
            "trl": evaluate(trainer.model, tokenizer, prompts, eval_seed),
        },
    }


def _log_values(trainer, key: str) -> list[float]:
    return [entry[key] for entry in trainer.state.log_history if key in entry]


def _mean_std(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0, "values": values}


def summarise(records: list[dict], last_n: int) -> dict:
    """Reward (last ``last_n`` batches and the post-training evaluation) and timing, per side."""
    out: dict = {"reward_last_batches": {}, "reward_eval": {}}
    for side in ("tokengym", "trl"):
        out["reward_last_batches"][side] = _mean_std(
            [statistics.fmean(r[f"{side}_reward"] for r in rec["rounds"][-last_n:]) for rec in records]
        )
        out["reward_first_batch"] = out.get("reward_first_batch", {})
        out["reward_first_batch"][side] = _mean_std([rec["rounds"][0][f"{side}_reward"] for rec in records])
        out["reward_eval"][side] = _mean_std([rec["eval"][side]["vader_mean"] for rec in records])
    timed = [r for rec in records for r in rec["rounds"][WARMUP_STEPS:]] or [r for rec in records for r in rec["rounds"]]
    tg = [r["tokengym_s"] for r in timed]
    trl_ = [r["trl_s"] for r in timed]
    between = [r["trl_between_steps_s"] for r in timed if r["trl_between_steps_s"] is not None]
    out["timing"] = {
        "rounds": len(timed),
        "warmup_rounds_dropped_per_seed": WARMUP_STEPS,
        "median_tokengym_s": statistics.median(tg),
        "median_trl_s": statistics.median(trl_),
        "median_ratio_tokengym_over_trl": statistics.median(a / b for a, b in zip(tg, trl_)),
        "ratio_of_medians": statistics.median(tg) / statistics.median(trl_),
        "median_trl_between_steps_s": statistics.median(between) if between else None,
        "median_ratio_with_trl_loop_overhead": statistics.median(
            r["tokengym_s"] / (r["trl_s"] + r["trl_between_steps_s"]) for r in timed if r["trl_between_steps_s"] is not None
        ),
        "first_round_s": {
            "tokengym": [rec["rounds"][0]["tokengym_s"] for rec in records],
            "trl": [rec["rounds"][0]["trl_s"] for rec in records],
        },
    }
    return out


def run_comparison(out: str | Path = "benchmarks/results/trl-grpo", *, episodes: int = 1024,
                   seeds: tuple[int, ...] = (0, 1, 2), last_n: int = 4, threads: int = 1) -> dict:
    """Run both trainers, interleaved, for ``episodes`` episodes each (a multiple of the batch) on
    each seed; write ``seedN.json`` and ``summary.json`` into ``out`` and return the summary."""
    from tokengym.lm.errors import bad_value

    if episodes % BATCH:
        raise bad_value("--episodes", episodes, f"a multiple of the batch, {BATCH}")
    trl = _import_trl()
    torch.set_num_threads(threads)
    import transformers

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for seed in seeds:
        with tempfile.TemporaryDirectory() as workdir:
            record = run_seed(seed, episodes, workdir)
        (out / f"seed{seed}.json").write_text(json.dumps(record, indent=1))
        records.append(record)
        print(
            f"seed {seed}: eval VADER tokengym {record['eval']['tokengym']['vader_mean']:.3f}, "
            f"TRL {record['eval']['trl']['vader_mean']:.3f}", file=sys.stderr,
        )
    from tokengym.lm.loading import load_causal_lm, load_tokenizer
    from tokengym.envs.prompts import SENTIMENT_PROMPTS

    untrained = {
        str(seed): evaluate(load_causal_lm("embedded"), load_tokenizer("embedded"), list(SENTIMENT_PROMPTS), 10_000 + seed)["vader_mean"]
        for seed in seeds
    }
    summary = {
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__,
                     "python": sys.version.split()[0]},
        "settings": {
            "model": "embedded (tokengym.lm.loading.load_causal_lm('embedded'), 4M-parameter GPT-2)",
            "prompts": "tokengym.envs.prompts.SENTIMENT_PROMPTS (40)",
            "reward": "VADER compound of the completion (tokengym.rewards.scorers.VaderSentiment)",
            "batch": BATCH, "group_size": GROUP, "new_tokens": NEW_TOKENS, "lr": LR, "beta": 0.0,
            "loss": "per-sequence token mean, then mean over sequences (TRL loss_type='grpo')",
            "advantages": "(r - group mean) / (group std, Bessel + 1e-4)", "clip_eps": 0.2, "num_iterations": 1,
            "max_grad_norm": MAX_GRAD_NORM, "optimizer": "Adam(W) betas (0.9, 0.999), eps 1e-8, no weight decay, constant lr",
            "sampling": "temperature 1, top_k 0, top_p 1", "dtype": "float32", "device": "cpu",
            "torch_threads": threads, "episodes": episodes, "seeds": list(seeds), "last_n": last_n,
            "eval_samples": EVAL_SAMPLES,
        },
        "untrained_eval_vader": untrained,
        **summarise(records, last_n),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary
