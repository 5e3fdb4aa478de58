"""π_ref: the frozen reference model, held once per run and scored at the sampler's temperature.

One :class:`Reference` serves everything that compares the policy with π_ref: the env steps it one
token per action (its :meth:`Reference.stepper`) when a KL-shaped reward needs per-token
``log π_ref``, and hands those numbers to the reward and, through ``info["ref_logprobs"]``, to the
agent; an agent whose env does not step it scores whole episodes once with :meth:`Reference.score`.
So the penalty, the agent's ``ref_logprobs`` and the logged KL are the same numbers, and π_ref is
in memory once. With LoRA the reference is the policy's own base model with the adapters disabled
(:meth:`Reference.adapters_off`), so it costs no memory at all.
"""
from __future__ import annotations

import contextlib
import copy
import os
from typing import Callable, ContextManager, Iterator

import torch

from tokengym.lm.cached_lm import CachedLM
from tokengym.lm.lora import base_state_dict, is_peft_model
from tokengym.lm.scoring import forward_responses, gather_logprobs

__all__ = ["Reference", "IncrementalLogprobs", "frozen_copy"]


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A deep copy of ``model`` in eval mode with no trainable parameters."""
    return copy.deepcopy(model).eval().requires_grad_(False)


class IncrementalLogprobs:
    """``log π(a_t|s_t)`` of one model, stepped one token per env step through a :class:`CachedLM`.

    ``start`` prefills the prompts; each call scores the step's actions, and the next call appends
    them first (so the episode's last actions, which nothing scores after, cost no forward). Rows
    that did not act append a pad, which is hidden from later steps. After a partial reset
    (same-step autoreset) a shared cache cannot restart single rows, so :meth:`invalidate` makes
    the next call re-prefill every row's current context in one batched forward.
    """

    def __init__(self, model: torch.nn.Module, temperature: float, context: Callable[[], ContextManager] | None = None):
        self.lm = CachedLM(model)
        self.temperature = float(temperature)
        self.context = context if context is not None else contextlib.nullcontext
        self.next_logprobs: torch.Tensor | None = None  # (B, V) log π(·|s_t) for the coming action
        self.pending: tuple[torch.Tensor, torch.Tensor] | None = None  # (actions, acted) scored, not yet appended

    def _logprobs(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(logits.float() / self.temperature, dim=-1)  # (B, V)

    def start(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> None:
        with self.context():
            self.next_logprobs = self._logprobs(self.lm.prefill(prompt_ids, prompt_mask))
        self.pending = None

    def invalidate(self) -> None:
        self.next_logprobs, self.pending = None, None

    def _catch_up(self, input_ids, attention_mask, prompt_width, response_lengths, acted) -> None:
        """Prefill every row's context *before* this step's action, left-packed: one forward."""
        mask = attention_mask.clone()  # (B, P+T) bool
        last = (prompt_width + response_lengths - 1).clamp(min=0)[:, None]  # (B, 1) this action's column
        mask.scatter_(1, last, mask.gather(1, last) & ~acted[:, None])
        order = torch.argsort(mask.long(), dim=1, stable=True)  # pads first, real tokens in order
        with self.context():
            logits = self.lm.prefill(input_ids.gather(1, order), mask.gather(1, order))
        self.next_logprobs = self._logprobs(logits)

    def __call__(self, input_ids, attention_mask, prompt_width, response_lengths, actions, acted) -> torch.Tensor:
        """(B,) log π(a_t|s_t) of this step's ``actions``; then advances the cache by one token.

        ``input_ids``/``attention_mask`` (B, P+T, mask bool) hold the buffer *after* the action was
        appended; ``response_lengths`` (B,) count it; ``acted`` (B,) marks the rows that acted.
        """
        if self.next_logprobs is None:
            self._catch_up(input_ids, attention_mask, prompt_width, response_lengths, acted)
        elif self.pending is not None:
            self._append(*self.pending)
        self.pending = (actions, acted)
        return gather_logprobs(self.next_logprobs, actions)  # (B,)

    def _append(self, actions: torch.Tensor, acted: torch.Tensor) -> None:
        """Advance the cache by the previous step's (B,) actions."""
        with self.context():
            logits = self.lm.step(actions)  # (B, V)
        # Rows that did not act appended a pad: hide that column and keep their position and logprobs.
        self.lm.attention_mask[:, -1] = acted.long()
        self.lm.next_positions = self.lm.next_positions - (~acted).long()[:, None]
        self.next_logprobs = torch.where(acted[:, None], self._logprobs(logits), self.next_logprobs)
        self.pending = None


class Reference:
    """A frozen causal LM as π_ref, scored at ``temperature`` (the env's sampling temperature).

    Build it with :meth:`load` (a name, directory, module or builder) or :meth:`adapters_off` (a
    PEFT model whose base, adapters disabled, is the reference). It never trains: every forward
    runs under ``torch.no_grad()``.

    ``autocast_dtype``: the policy's (an agent sets it with :meth:`under_autocast`), so π_ref runs
    under the same numerics as the policy it is compared with. In bfloat16 a float32 π_ref and an
    autocast policy differ by rounding alone (0.004 nats per sequence at initialisation on the
    embedded model), which the KL penalty would charge as if the policy had moved.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        temperature: float = 1.0,
        context: Callable[[], ContextManager] | None = None,
        autocast_dtype: torch.dtype | None = None,
    ):
        if not temperature > 0:
            raise ValueError(f"Reference temperature must be > 0, got {temperature!r}")
        self.model = model
        self.temperature = float(temperature)
        self.autocast_dtype = autocast_dtype
        self._context = context

    @classmethod
    def load(
        cls,
        source: str | os.PathLike | torch.nn.Module | Callable[[], torch.nn.Module],
        *,
        temperature: float = 1.0,
        device: str | torch.device = "cpu",
        trust_remote_code: bool = False,
    ) -> "Reference":
        """π_ref from a model name or directory (loaded frozen), a module (used as is: the caller
        owns it) or a zero-argument builder (called once)."""
        if isinstance(source, torch.nn.Module):
            model = source
        elif callable(source):
            model = source().to(device).eval().requires_grad_(False)
        else:
            from tokengym.lm.loading import load_causal_lm

            model = load_causal_lm(source, device=device, trust_remote_code=trust_remote_code).requires_grad_(False)
        return cls(model, temperature)

    @classmethod
    def adapters_off(
        cls, peft_model: torch.nn.Module, temperature: float = 1.0, autocast_dtype: torch.dtype | None = None
    ) -> "Reference":
        """The base model of a PEFT ``peft_model`` with its adapters disabled: no second copy."""
        return cls(peft_model, temperature, context=peft_model.disable_adapter, autocast_dtype=autocast_dtype)

    def under_autocast(self, dtype: torch.dtype | None) -> "Reference":
        """This reference (same model, temperature and context) run under ``torch.autocast(dtype)``
        (None: float32); itself when that is already so."""
        if dtype == self.autocast_dtype:
            return self
        return Reference(self.model, self.temperature, context=self._context, autocast_dtype=dtype)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def save_pretrained(self, directory: str | os.PathLike, tokenizer=None, state_dict: dict | None = None) -> None:
        """Write π_ref as a plain model directory that ``AutoModelForCausalLM`` loads, with its
        generation config and ``tokenizer`` (none when None: a token-id-only env). ``state_dict``:
        the full weights of a sharded π_ref (:func:`tokengym.lm.fsdp.full_state_dict`).

        For :meth:`adapters_off` this is the base model's own weights, adapters left out, so a LoRA
        run's ``reference/`` is the full base model, once.
        """
        if is_peft_model(self.model):
            self.model.get_base_model().save_pretrained(directory, state_dict=base_state_dict(self.model))
        else:
            self.model.save_pretrained(directory, state_dict=state_dict)
        if hasattr(tokenizer, "save_pretrained"):
            tokenizer.save_pretrained(directory)

    @contextlib.contextmanager
    def context(self) -> Iterator[None]:
        """The context every forward of π_ref runs in: adapters off for LoRA, and the autocast."""
        with contextlib.ExitStack() as stack:
            if self._context is not None:
                stack.enter_context(self._context())
            if self.autocast_dtype is not None:
                stack.enter_context(torch.autocast(self.device.type, dtype=self.autocast_dtype))
            yield

    def stepper(self) -> IncrementalLogprobs:
        """A fresh one-token-per-step scorer over this reference (for the env's rollout)."""
        return IncrementalLogprobs(self.model, self.temperature, self.context)

    @torch.no_grad()
    def score(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_width: int) -> torch.Tensor:
        """(B, T) teacher-forced ``log π_ref(a_t|s_t)`` of the response tokens of a (B, P+T) buffer."""
        with self.context():
            logits, _ = forward_responses(self.model, input_ids, attention_mask, prompt_width)  # (B, T, V)
        logprobs_all = torch.log_softmax(logits.float() / self.temperature, dim=-1)  # (B, T, V)
        return gather_logprobs(logprobs_all, input_ids[:, prompt_width:])  # (B, T)
