"""tokengym.lm: the language-model machinery every other layer builds on.

Loading models and tokenizers, cached one-token stepping, teacher-forced scoring, sampling, the
reference model and the KL estimators, atomic writes (:mod:`tokengym.lm.io`) and the shared
matplotlib setup (:mod:`tokengym.lm.plotting`). This package imports nothing else from tokengym;
the dependency order is ``lm ← rewards ← envs ← agents ← benchmarks ← tokengym`` (the CLI).
"""
from tokengym.lm.cached_lm import CachedLM, positions_from_mask
from tokengym.lm.kl import ESTIMATORS, REWARD_ESTIMATORS, check_estimator, kl_estimate
from tokengym.lm.loading import EMBEDDED_MODEL_DIR, load_causal_lm, load_tokenizer, vocab_width
from tokengym.lm.lora import LoRAConfig, apply_lora, is_peft_model
from tokengym.lm.merge import merge_task_vectors
from tokengym.lm.reference import IncrementalLogprobs, Reference, frozen_copy
from tokengym.lm.sampling import SamplingConfig, filter_logits, sample
from tokengym.lm.scoring import forward_responses, gather_logprobs

__all__ = [
    "CachedLM", "EMBEDDED_MODEL_DIR", "ESTIMATORS", "IncrementalLogprobs", "LoRAConfig", "REWARD_ESTIMATORS", "Reference",
    "SamplingConfig", "apply_lora", "check_estimator", "filter_logits", "forward_responses", "frozen_copy", "gather_logprobs",
    "is_peft_model", "kl_estimate", "load_causal_lm", "load_tokenizer", "merge_task_vectors", "positions_from_mask", "sample",
    "vocab_width",
]
