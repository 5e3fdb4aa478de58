"""The agents' policy: any Hugging Face causal LM, stepped with a KV cache and re-scored by teacher forcing.

Two phases share one model:

* rollout (``begin`` / ``act`` / ``advance``): one token per call through a :class:`CachedLM`,
  under ``torch.no_grad()``, with no host synchronisation;
* update (``score``): one teacher-forced forward over the whole ``(B, P+T)`` buffer, with
  gradients, returning the log-probs, entropies and values of the response tokens.

Both use the env's token layout (prompts left-padded to width ``P``, responses right-padded in
columns ``P .. P+T-1``) and explicit ``position_ids``, so the two phases give the same log-probs
(to ~1e-6 in fp32). Dropout stays off in both phases: the PPO ratio ``π_θ/π_θold`` must compare
the same deterministic function, so :meth:`Policy.train` leaves the wrapped models in eval mode
(TRL disables dropout for the same reason).

Log-probs and sampling filters follow :class:`~tokengym.lm.sampling.SamplingConfig`, which an
agent takes from its env (the env's one source of truth for the temperature, top-k and top-p):
every log-prob is that of the distribution the actions are drawn from,
``log_softmax(filter(logits / temperature))[a]``, in ``act`` and ``score`` alike; the env's
reference is scored at the same temperature, unfiltered (docs/kl.md, "Top-k and top-p").

Mixed precision (``autocast_dtype``): the LM forwards of both phases run under ``torch.autocast``
while the parameters, the optimizer and the value head stay float32 (master weights), unlike a
weight cast. LoRA (``lora=``): the LM becomes a ``peft.PeftModel`` whose adapters alone train.
"""
from __future__ import annotations

import contextlib
import copy
import os
import warnings
from pathlib import Path
from typing import Iterator, NamedTuple

import torch
from safetensors.torch import load_file, save_file

from tokengym.lm.cached_lm import CachedLM
from tokengym.lm.loading import load_causal_lm, vocab_width
from tokengym.lm.lora import LoRAConfig, apply_lora, is_peft_model
from tokengym.lm.sampling import SamplingConfig, sample
from tokengym.lm.scoring import forward_responses, gather_logprobs

__all__ = ["Policy", "PolicyStep", "Scored", "check_autocast"]

VALUE_HEAD_FILE = "value_head.safetensors"
"""Value head weights inside a saved policy directory."""
VALUE_MODEL_DIR = "value_model"
"""Sub-directory holding the separate value trunk of a saved policy, if it has one."""


class PolicyStep(NamedTuple):
    """What ``act`` returns for one step of a batch of B rows."""

    actions: torch.Tensor
    """(B,) int64 sampled token ids."""
    logprobs: torch.Tensor
    """(B,) float log π_θ(a_t|s_t) under the sampled (temperature-scaled, filtered) distribution."""
    values: torch.Tensor | None
    """(B,) float V(s_t), or None without a value function."""


class Scored(NamedTuple):
    """What ``score`` returns for the T response columns of a (B, P+T) buffer."""

    logprobs: torch.Tensor
    """(B, T) log π_θ(a_t|s_t) of the buffer's response tokens, with gradients."""
    entropy: torch.Tensor
    """(B, T) entropy of π_θ(·|s_t), the sampled (temperature-scaled, filtered) distribution."""
    values: torch.Tensor | None
    """(B, T) V(s_t), the state before response token t, or None without a value function."""


def check_autocast(device_type: str, dtype: torch.dtype | None) -> None:
    """Raise a ValueError unless ``torch.autocast(device_type, dtype)`` really runs in ``dtype``.

    torch only warns (and silently runs in float32) when a device's autocast lacks a dtype, e.g.
    float16 on some CPU builds; a user who asked for mixed precision should hear about it.
    """
    if dtype is None:
        return
    if dtype not in (torch.bfloat16, torch.float16):
        raise ValueError(f"autocast_dtype must be torch.bfloat16, torch.float16 or None, got {dtype!r}")
    if not torch.amp.is_autocast_available(device_type):
        raise ValueError(f"torch has no autocast for device type {device_type!r}; use autocast_dtype=None")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.autocast(device_type, dtype=dtype):
            enabled = torch.is_autocast_enabled(device_type)
    if not enabled or caught:
        why = "; ".join(str(w.message) for w in caught) or "autocast stays disabled"
        raise ValueError(
            f"autocast to {dtype} is not supported on {device_type!r} by this torch build ({why}); "
            "use torch.bfloat16 or autocast_dtype=None"
        )


def _hidden_size(model: torch.nn.Module) -> int:
    """Width of the last hidden state (the input width of the LM head)."""
    head = model.get_output_embeddings()
    if head is not None:
        return int(head.weight.shape[1])
    return int(model.config.get_text_config().hidden_size)


class Policy(torch.nn.Module):
    """A causal LM as a token-level policy, with an optional value function.

    Build it with :meth:`from_pretrained`. The value function is either a head on the policy's own
    last hidden state (``value_head=True``; the value loss then also trains the shared trunk) or
    a separate copy of the LM with its own head (``separate_value_model=True``). Values are computed
    in fp32 whatever the model's dtype.

    ``tokenizer`` is saved beside the model by :meth:`save_pretrained` (an agent sets it to its
    env's tokenizer; None for token-id-only envs, and then no tokenizer is saved).
    ``autocast_dtype`` (``torch.bfloat16`` or ``torch.float16``) runs every LM forward under
    ``torch.autocast`` with the float32 parameters as master weights.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        value_head: bool = False,
        value_model: torch.nn.Module | None = None,
        sampling: SamplingConfig | None = None,
        tokenizer=None,
        autocast_dtype: torch.dtype | None = None,
    ):
        super().__init__()
        check_autocast(next(model.parameters()).device.type, autocast_dtype)
        self.autocast_dtype = autocast_dtype
        self.tokenizer = tokenizer
        self.model = model
        self.value_model = value_model  # separate value trunk (a causal LM feeding the head) or None
        self.value_head: torch.nn.Linear | None = None
        if value_head or value_model is not None:
            trunk = value_model if value_model is not None else model
            device = next(trunk.parameters()).device
            self.value_head = torch.nn.Linear(_hidden_size(trunk), 1, device=device)
            # Small initial values, so early value errors do not swamp the first updates.
            torch.nn.init.normal_(self.value_head.weight, std=1e-2)
            torch.nn.init.zeros_(self.value_head.bias)
        self.sampling = sampling if sampling is not None else SamplingConfig()
        self._lm: CachedLM | None = None
        self._value_lm: CachedLM | None = None
        self._logits: torch.Tensor | None = None  # (B, V) logits for the next action
        self.train(False)

    @classmethod
    def from_pretrained(
        cls,
        name_or_model: str | os.PathLike | torch.nn.Module = "embedded",
        *,
        device: str | torch.device = "cpu",
        value_head: bool = False,
        separate_value_model: bool = False,
        dtype: torch.dtype | None = torch.float32,
        trust_remote_code: bool = False,
        sampling: SamplingConfig | None = None,
        lora: LoRAConfig | None = None,
        base_model: str | os.PathLike | torch.nn.Module | None = None,
        tokenizer=None,
        autocast_dtype: torch.dtype | None = None,
    ) -> "Policy":
        """A policy around ``"embedded"``, a hub name, a local directory or a built model instance.

        A directory written by :meth:`save_pretrained` also restores its value head
        (``value_head.safetensors``) and its separate value model (``value_model/``) when present,
        whatever ``value_head`` / ``separate_value_model`` say. A model instance is moved to
        ``device`` and cast to ``dtype`` (``dtype=None`` keeps its dtype). A fresh separate value
        model starts as a copy of the policy LM.

        ``lora`` wraps the LM in fresh PEFT LoRA adapters (only they, and a value head, train). A
        saved LoRA policy (a PEFT adapter directory, with ``adapter_config.json``) loads onto
        ``base_model`` (a name, directory or module), by default the base the adapter config names;
        its adapters stay trainable. ``tokenizer`` and ``autocast_dtype``: see the class docstring.
        """
        saved = None
        adapter_dir = None
        if isinstance(name_or_model, torch.nn.Module):
            model = name_or_model if dtype is None else name_or_model.to(dtype)
            model = model.to(device)
        elif Path(name_or_model).is_dir() and (Path(name_or_model) / "adapter_config.json").is_file():
            adapter_dir = saved = Path(name_or_model)
            model = cls._load_adapter(adapter_dir, base_model, device, dtype, trust_remote_code)
        else:
            model = load_causal_lm(name_or_model, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
            if Path(name_or_model).is_dir():
                saved = Path(name_or_model)
        if lora is not None:
            if is_peft_model(model):
                raise ValueError("lora= was given but the model already has PEFT adapters")
            if separate_value_model:
                raise ValueError("lora= with separate_value_model=True is not supported; use value_head=True")
            model = apply_lora(model, lora)
        value_model = None
        if saved is not None and (saved / VALUE_MODEL_DIR).is_dir():
            value_model = load_causal_lm(
                saved / VALUE_MODEL_DIR, device=device, dtype=dtype, trust_remote_code=trust_remote_code
            )
        elif separate_value_model:
            value_model = copy.deepcopy(model)
        head_file = saved / VALUE_HEAD_FILE if saved is not None else None
        has_head_file = head_file is not None and head_file.is_file()
        policy = cls(
            model, value_head=value_head or has_head_file, value_model=value_model, sampling=sampling,
            tokenizer=tokenizer, autocast_dtype=autocast_dtype,
        )
        if has_head_file:
            policy.value_head.load_state_dict(load_file(head_file, device=str(policy.device)))
        return policy

    @staticmethod
    def _load_adapter(adapter_dir: Path, base_model, device, dtype, trust_remote_code) -> torch.nn.Module:
        """A trainable ``PeftModel``: the adapters in ``adapter_dir`` on ``base_model`` (or the named base)."""
        import json

        from peft import PeftModel

        if base_model is None:
            base_model = json.loads((adapter_dir / "adapter_config.json").read_text()).get("base_model_name_or_path")
            if not base_model:
                raise ValueError(f"{adapter_dir} names no base model; pass base_model=NAME_OR_DIR")
        if isinstance(base_model, torch.nn.Module):
            base = base_model.to(device) if dtype is None else base_model.to(device=device, dtype=dtype)
        else:
            base = load_causal_lm(base_model, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
        return PeftModel.from_pretrained(base, adapter_dir, is_trainable=True).eval()

    # ----------------------------------------------------------------- properties and parameters
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def vocab_size(self) -> int:
        """V, the logits width (may exceed ``len(tokenizer)``)."""
        return vocab_width(self.model)

    def train(self, mode: bool = True) -> "Policy":
        """Set the module's mode but keep the LMs in eval mode (dropout off; see the module docstring)."""
        super().train(mode)
        self.model.eval()
        if self.value_model is not None:
            self.value_model.eval()
        return self

    @property
    def is_lora(self) -> bool:
        """Is the LM a PEFT model (only its adapters train; π_ref is its base, adapters off)?"""
        return is_peft_model(self.model)

    def autocast(self) -> contextlib.AbstractContextManager:
        """The context every LM forward runs in: ``torch.autocast`` when ``autocast_dtype`` is set."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def policy_parameters(self) -> Iterator[torch.nn.Parameter]:
        """Parameters of the policy LM (with a shared value head, the trunk the value loss also trains)."""
        return self.model.parameters()

    def value_parameters(self) -> Iterator[torch.nn.Parameter]:
        """Parameters only the value function has: the head, plus the separate value model if any."""
        if self.value_head is not None:
            yield from self.value_head.parameters()
        if self.value_model is not None:
            yield from self.value_model.parameters()

    # ----------------------------------------------------------------- rollout
    @torch.no_grad()
    def begin(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> None:
        """Prefill the KV cache with (B, P) left-padded prompts (``prompt_mask`` True on real tokens)."""
        shared_value = self.value_head is not None and self.value_model is None
        self._lm = CachedLM(self.model, output_hidden_states=shared_value)
        self._value_lm = None
        with self.autocast():
            self._logits = self._lm.prefill(prompt_ids, prompt_mask)  # (B, V)
            if self.value_model is not None:
                self._value_lm = CachedLM(self.value_model, output_hidden_states=True)
                self._value_lm.prefill(prompt_ids, prompt_mask)

    @torch.no_grad()
    def act(self, generator: torch.Generator | None = None, shard: tuple[int, int] = (0, 1)) -> PolicyStep:
        """Sample one action per row from the current state; a seeded ``generator`` (on the
        policy's device) makes it reproducible. ``shard``: the rows are one rank's slice of a
        data-parallel batch (:func:`~tokengym.lm.sampling.sample`)."""
        if self._logits is None:
            raise RuntimeError("Policy.act called before Policy.begin(prompt_ids, prompt_mask)")
        logprobs_all = self.sampling.logprobs(self._logits)  # (B, V) log_softmax(filter(logits / τ))
        actions = sample(logprobs_all.exp(), generator, shard)  # (B,)
        logprobs = gather_logprobs(logprobs_all, actions)  # (B,)
        return PolicyStep(actions, logprobs, self._rollout_values())

    @torch.no_grad()
    def advance(self, actions: torch.Tensor) -> None:
        """Append the (B,) chosen tokens to the cache."""
        if self._lm is None:
            raise RuntimeError("Policy.advance called before Policy.begin(prompt_ids, prompt_mask)")
        with self.autocast():
            self._logits = self._lm.step(actions)  # (B, V)
            if self._value_lm is not None:
                self._value_lm.step(actions)

    def _rollout_values(self) -> torch.Tensor | None:
        """(B,) V(s_t) from the hidden state behind the current logits, or None."""
        if self.value_head is None:
            return None
        lm = self._value_lm if self._value_lm is not None else self._lm
        return self.value_head(lm.last_hidden.float()).squeeze(-1)  # (B,)

    # ----------------------------------------------------------------- update
    def score(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_width: int) -> Scored:
        """Teacher-forced log-probs, entropies and values of the response columns, with gradients.

        ``input_ids`` / ``attention_mask`` are the env's (B, P+T) buffer; the response token of
        column ``P+t`` is scored from the logits and hidden state at column ``P+t−1``, the state in
        which it was chosen. Entries on invalid (padded) response columns are meaningless; mask them.
        """
        P = prompt_width
        T = input_ids.shape[1] - P
        shared_value = self.value_head is not None and self.value_model is None
        with self.autocast():
            logits, hidden = forward_responses(
                self.model, input_ids, attention_mask, P, output_hidden_states=shared_value
            )  # (B, T, V), (B, P+T, H) or None
        actions = input_ids[:, P:]  # (B, T)
        logprobs_all = self.sampling.logprobs(logits, keep=actions)  # (B, T, V) the sampled distribution
        logprobs = gather_logprobs(logprobs_all, actions)  # (B, T)
        probs = logprobs_all.exp()  # (B, T, V)
        # −Σ p log p over the support: 0·(−inf) is NaN in the value, and torch.special.entr's
        # gradient −(1 + log p) is inf at p = 0, which times ∂p = 0 is NaN in the backward
        entropy = -(probs * logprobs_all.masked_fill(probs == 0, 0.0)).sum(-1)  # (B, T)

        values = None
        if self.value_head is not None:
            if not shared_value:
                with self.autocast():
                    _, hidden = forward_responses(
                        self.value_model, input_ids, attention_mask, P, output_hidden_states=True, logits=False
                    )  # (B, P+T, H); the value trunk's LM head is unused
            values = self.value_head(hidden[:, P - 1 : P + T - 1].float()).squeeze(-1)  # (B, T)
        return Scored(logprobs, entropy, values)

    # ----------------------------------------------------------------- saving
    def save_pretrained(
        self, directory: str | os.PathLike, model_state: dict | None = None, value_model_state: dict | None = None,
    ) -> None:
        """Save so that ``transformers`` alone loads the LM and :meth:`from_pretrained` restores all.

        Layout: the LM's ``save_pretrained`` files (safetensors and generation config; for a LoRA
        policy, PEFT's adapter directory: ``adapter_config.json`` and ``adapter_model.safetensors``,
        which ``peft.AutoPeftModelForCausalLM`` loads onto the base the config names); the
        tokenizer, if the policy has one; ``value_head.safetensors``; and ``value_model/`` for a
        separate value model. Written to a temporary sibling directory and
        renamed into place, so a crash never leaves a half-written ``directory``.
        ``model_state`` / ``value_model_state``: the LMs' full state dicts when they are sharded
        (:func:`tokengym.lm.fsdp.full_state_dict`).
        """
        from tokengym.lm.io import atomic_write_dir

        def write(tmp: Path) -> None:
            self.model.save_pretrained(tmp, state_dict=model_state)
            if hasattr(self.tokenizer, "save_pretrained"):  # None for token-id-only envs
                self.tokenizer.save_pretrained(tmp)
            if self.value_head is not None:
                state = {k: v.detach().contiguous().cpu() for k, v in self.value_head.state_dict().items()}
                save_file(state, tmp / VALUE_HEAD_FILE)
            if self.value_model is not None:
                self.value_model.save_pretrained(tmp / VALUE_MODEL_DIR, state_dict=value_model_state)

        atomic_write_dir(directory, write)
