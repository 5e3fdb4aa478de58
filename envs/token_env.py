"""The token-level MDP as a native batched Gymnasium ``VectorEnv`` that lives on a torch device.

Inside: :class:`TokenVectorEnv`, whose class docstring (Gymnasium's sections) is the reference for
the MDP; its construction (model, tokenizer, spaces, reward, π_ref, device buffers), ``reset``
(prompts from its :class:`~tokengym.envs.prompt_pool.PromptPool` left-padded into the buffer),
``step`` (append, end rows, reward, π_ref's log-probs), same-step autoreset, and the properties
agents and rewards read.
"""
from __future__ import annotations

from typing import Any, Sequence

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv

from tokengym.envs.tasks import Task, get_task
from tokengym.lm.distributed import world
from tokengym.lm.loading import load_model_config, load_tokenizer, max_positions, vocab_width
from tokengym.lm.reference import IncrementalLogprobs, Reference, frozen_copy
from tokengym.lm.sampling import SamplingConfig
from tokengym.rewards import make_reward
from tokengym.rewards.base import EpisodeStart, Reward, StepBatch, as_components, reference_request
from tokengym.envs.prompt_pool import PromptPool
from tokengym.envs.records import PromptRecords

__all__ = ["TokenVectorEnv"]

_AUTORESET_MODES = {
    "disabled": AutoresetMode.DISABLED,
    AutoresetMode.DISABLED: AutoresetMode.DISABLED,
    "same-step": AutoresetMode.SAME_STEP,
    AutoresetMode.SAME_STEP: AutoresetMode.SAME_STEP,
}


def _check_shard(shard) -> tuple[int, int]:
    """``shard`` as ``(rank, world_size)`` with ``0 <= rank < world_size``, or a ValueError."""
    ok = isinstance(shard, (tuple, list)) and len(shard) == 2
    ok = ok and all(isinstance(x, int) and not isinstance(x, bool) for x in shard) and 0 <= shard[0] < shard[1]
    if not ok:
        raise ValueError(f"shard must be (rank, world_size) with 0 <= rank < world_size, got {shard!r}")
    return int(shard[0]), int(shard[1])


class TokenVectorEnv(VectorEnv):
    """Batched text generation as a token-level MDP, with every tensor on one torch device.

    ## Description

    Each of the ``num_envs`` rows continues a prompt one token at a time. The state is the prompt
    plus the tokens generated so far, an action is the next token id, and the transition appends
    it. Rewards come from a pluggable reward object (``tokengym.rewards``): holistic (one score at
    the last token), fine-grained (segment scores on the tokens that close each segment) or
    KL-shaped (a per-token ``-β·KL`` to a frozen reference model around any other reward).

    ## Action Space

    ``MultiDiscrete([V] * num_envs)``: one token id per row, ``V`` the model's logits width
    (``lm_head`` out-features, which may exceed ``len(tokenizer)``). Actions may be a torch tensor
    (any device; moved to the env's) or a numpy array of integer dtype and shape ``(num_envs,)``.
    Floats, other shapes and ids outside ``[0, V)`` raise ``ValueError``; nothing is clipped.

    ## Observation Space

    ``Dict(input_ids=Box(0, V-1, (num_envs, L), int64), attention_mask=Box(0, 1, (num_envs, L),
    int64))`` as torch tensors on ``device``, with ``L = max_prompt_tokens + max_new_tokens``.
    Prompts are left-padded into columns ``[0, P)``; generated tokens fill columns ``P, P+1, …``.
    Pads are the tokenizer's pad id (or 0), always inside ``[0, V-1]``, with ``attention_mask`` 0.

    ## Rewards

    ``step`` returns the ``(num_envs,)`` float tensor of this step's rewards: ``r_t`` for the
    action just taken. Rows that did not act (their episode already ended) get exactly 0.
    ``info["reward_components"]`` maps each component name to its ``(num_envs,)`` per-episode total
    so far, so ablations see what moved.

    Late payments: a reward may pay a row that did not act this step (a TRL reward function is
    called once per batch, when the last row ends, so rows that ended earlier are scored then). That
    value belongs to the row's just-ended episode: it is not in the step reward but in
    ``info["late_rewards"]`` (``(num_envs,)``, 0 elsewhere) and in the component totals. Credit it
    to the episode's last step (tokengym's agents do). Only ``"disabled"`` autoreset has them.

    ``reward=`` also takes TRL reward functions ``f(prompts, completions, completion_ids,
    **columns)``, alone or as a list with ``reward_kwargs={"weights": [...]}``; each function is a
    component, and it receives the dataset's columns row by row (``tokengym.rewards.trl``).

    The policy's log-prob of each action reaches the reward through an explicit channel:
    ``env.step(actions, logprobs=logprobs)``. A KL-shaped reward uses it instead of running the
    policy again; without it, the KL-shaped reward needs a policy model bound explicitly.

    **The reference model and the temperature.** The env owns the run's one π_ref
    (:attr:`reference`, a :class:`~tokengym.lm.reference.Reference`) and its one
    :attr:`sampling` config (temperature, top-k, top-p). When the reward needs per-token
    ``log π_ref`` (a KL-shaped reward), the env steps π_ref once per action through its own KV
    cache, hands the numbers to the reward (``StepBatch.ref_logprobs``) and returns them as
    ``info["ref_logprobs"]`` ((B,), 0 on rows that did not act), so an agent trains and logs on
    exactly the numbers the penalty used. Every log-prob is ``log_softmax(logits / temperature)``.

    ## Starting State

    ``reset`` draws ``num_envs`` prompts from the task's prompt source with ``self.np_random``.
    ``options={"group_size": G}`` draws ``num_envs / G`` prompts and repeats each ``G`` times in
    consecutive rows (for GRPO). ``options={"prompts": [...]}`` sets the prompts explicitly
    (strings, token ids, chat messages or records). Each row carries its record's columns through
    resets, groups (repeated with the prompt) and same-step autoresets; ``info["columns"]`` (at
    ``reset`` and ``step``) maps each column to its ``num_envs`` per-row values, and rewards receive
    them as ``EpisodeStart.columns`` / ``StepBatch.columns``.

    ## Episode End

    A row is ``terminated`` when its action is a stop token (EOS by default; ``stop_token_ids``
    configures it, an empty list disables it) or when it is the row's ``max_new_tokens``-th action.
    With ``min_new_tokens=m``, a stop token among a row's first ``m`` actions is an ordinary token:
    the standard guard against a policy that learns to stop early because every token costs KL
    (``min_new_tokens=max_new_tokens`` gives fixed-length episodes, as in Ziegler et al. 2019).
    Both end the MDP: ``max_new_tokens`` is the horizon of this finite-horizon MDP, not a time limit
    on an endless task, and the observation encodes the step (the mask counts the tokens), so the
    value after the last step is 0. Reporting the limit as ``terminated`` keeps third-party agents
    (stable-baselines3 included) from bootstrapping ``γ·V(s_T)`` past it. ``truncated`` is always
    False; ``info["hit_max_new_tokens"]`` ((B,) bool) tells a row cut by the limit from one that
    stopped.

    Autoreset (``metadata["autoreset_mode"]``):

    * ``"disabled"`` (default, the fast path): batch-synchronous episodes. Finished rows wait,
      padded, with zero reward, until the whole batch is reset; one KV cache serves the batch.
    * ``"same-step"``: Gymnasium's SAME_STEP mode for third-party agents. A finished row is reset
      inside the same ``step``; its last observation and info are in ``info["final_obs"]`` and
      ``info["final_info"]`` (masked by ``info["_final_obs"]``). This mode reads which rows ended
      on the host every step.

    ## Arguments

    * ``num_envs``: rows in the batch.
    * ``task``: a registered task name or :class:`~tokengym.envs.tasks.Task` supplying defaults for
      ``model``, ``prompts``, ``reward`` and ``max_new_tokens``.
    * ``model``: ``"embedded"`` (default), a built-in, a local directory, a hub name, or a model
      instance. The env only reads its config (``V``, context length); a KL-shaped reward loads it
      as the default frozen reference.
    * ``tokenizer``: a tokenizer or a name; defaults to the model's (none for a model instance,
      which then needs token-id prompts).
    * ``prompts``: the prompt pool: a list of strings, token-id lists or chat messages (lists of
      ``{"role", "content"}``, encoded with the tokenizer's chat template and
      ``add_generation_prompt=True``); or records with columns: a list of dicts with a ``prompt``
      field plus any other columns, a path to a ``.jsonl`` file of such records, or a
      ``datasets.Dataset`` (see ``tokengym.envs.records``).
    * ``reward``: a reward object, a name (``"holistic"``, ``"fine-grained"``, ``"kl-shaped"``,
      ``"fine-grained+kl"``, see ``tokengym.rewards.make_reward``), or TRL reward function(s).
      ``reward_kwargs`` go to it (``weights``, ``none_value`` for functions).
    * ``max_new_tokens`` (T), ``max_prompt_tokens`` (P, default: longest prompt).
    * ``min_new_tokens``: actions before a stop token can end the episode (default 0).
    * ``temperature``, ``top_k``, ``top_p``: the sampling distribution (see
      :class:`~tokengym.lm.sampling.SamplingConfig`); agents read :attr:`sampling` from the env, and
      π_ref is scored at this temperature.
    * ``ref_model``: π_ref (a name, directory or module). Default: the one a KL-shaped reward
      names, else the policy's starting weights (the model name, or a frozen copy of a model
      instance taken when π_ref is first needed).
    * ``device``: where every tensor lives. ``check_actions``: range-check actions each step (a
      host read on CUDA; our own agents never emit out-of-range ids and may switch it off).
    * ``copy_observations``: return copies (default) rather than views of the live buffers.
    * ``shard``: ``(rank, world_size)`` of a data-parallel run (default: torch.distributed's, else
      ``(0, 1)``). The env is then one rank's slice of a global batch of ``world_size × num_envs``
      rows: ``reset`` draws the whole global batch's prompts with ``np_random`` (seeded alike on
      every rank) and keeps rows ``rank·num_envs … (rank+1)·num_envs − 1``, so N ranks of B/N rows
      hold exactly the rows one process of B would (GRPO groups never straddle ranks).

    ## Example

    >>> import gymnasium as gym, torch, tokengym
    >>> envs = gym.make_vec("tokengym/Calibration-v0", num_envs=4, device="cpu")
    >>> obs, info = envs.reset(seed=0)
    >>> obs["input_ids"].shape, envs.single_action_space
    (torch.Size([4, 4]), Discrete(8))
    >>> for t in (1, 2, 3):
    ...     obs, reward, terminated, truncated, info = envs.step(torch.full((4,), t))
    >>> reward.tolist(), terminated.tolist(), info["hit_max_new_tokens"].tolist()
    ([3.0, 3.0, 3.0, 3.0], [True, True, True, True], [True, True, True, True])

    ## Version History

    * v0: initial release.
    """

    metadata = {"autoreset_mode": AutoresetMode.DISABLED, "render_modes": ["ansi"], "render_fps": 4}

    def __init__(
        self,
        num_envs: int = 1,
        *,
        task: str | Task | None = None,
        model: Any = None,
        tokenizer: Any = None,
        prompts: Sequence[str] | Sequence[Sequence[int]] | None = None,
        reward: Reward | str | None = None,
        reward_kwargs: dict | None = None,
        max_new_tokens: int | None = None,
        max_prompt_tokens: int | None = None,
        stop_token_ids: Sequence[int] | str | None = "eos",
        min_new_tokens: int = 0,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        ref_model: Any = None,
        device: str | torch.device = "cpu",
        autoreset_mode: str | AutoresetMode = "disabled",
        check_actions: bool = True,
        copy_observations: bool = True,
        trust_remote_code: bool = False,
        render_mode: str | None = None,
        shard: tuple[int, int] | None = None,
    ):
        task = get_task(task) if task is not None else Task(name="custom")
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        if autoreset_mode not in _AUTORESET_MODES:
            raise ValueError(
                f"autoreset_mode must be 'disabled' or 'same-step', got {autoreset_mode!r}"
            )
        if render_mode not in (None, "ansi"):
            raise ValueError(f"render_mode must be None or 'ansi', got {render_mode!r}")
        self.task = task
        self.sampling = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p)
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.render_mode = render_mode
        self.check_actions = check_actions
        self.copy_observations = copy_observations
        self.metadata = {**self.metadata, "autoreset_mode": _AUTORESET_MODES[autoreset_mode]}
        self.shard = _check_shard(shard if shard is not None else world())

        # Model and tokenizer: the env needs only V, the context length and the tokenizer.
        self.model = model if model is not None else task.model
        if isinstance(self.model, torch.nn.Module):
            config = self.model.config
            self.vocab_size = vocab_width(self.model)
        else:
            config = load_model_config(self.model, trust_remote_code=trust_remote_code)
            self.vocab_size = vocab_width(config)
        if tokenizer is None and task.tokenizer is not None:
            tokenizer = task.tokenizer
        elif tokenizer is None and not isinstance(self.model, torch.nn.Module):
            tokenizer = self.model  # a model instance names no tokenizer: token-id prompts only
        if isinstance(tokenizer, str):
            tokenizer = load_tokenizer(tokenizer, trust_remote_code=trust_remote_code)
        self.tokenizer = tokenizer
        V = self.vocab_size

        self.max_new_tokens = max_new_tokens if max_new_tokens is not None else task.max_new_tokens
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive int, got {self.max_new_tokens!r}")
        self._pool = PromptPool(prompts if prompts is not None else task.prompts(), tokenizer, V)
        self.max_prompt_tokens = max_prompt_tokens if max_prompt_tokens is not None else self._pool.longest
        self._pool.check_lengths(self._pool.ids, self.max_prompt_tokens)
        context = max_positions(config)
        if context is not None and self.max_prompt_tokens + self.max_new_tokens > context:
            raise ValueError(
                f"max_prompt_tokens + max_new_tokens = {self.max_prompt_tokens} + "
                f"{self.max_new_tokens} exceeds the model's context of {context} tokens"
            )

        pad = getattr(tokenizer, "pad_token_id", None)
        self.pad_token_id = pad if isinstance(pad, int) and 0 <= pad < V else 0
        self.stop_token_ids = self._resolve_stop_tokens(stop_token_ids if task.stop else [], V)
        if isinstance(min_new_tokens, bool) or not isinstance(min_new_tokens, int) or not 0 <= min_new_tokens <= self.max_new_tokens:
            raise ValueError(
                f"min_new_tokens must be an integer in [0, max_new_tokens={self.max_new_tokens}], got {min_new_tokens!r}"
            )
        self.min_new_tokens = min_new_tokens
        self._stop_ids = torch.tensor(self.stop_token_ids, dtype=torch.long, device=self.device)

        # Spaces.
        P, T = self.max_prompt_tokens, self.max_new_tokens
        L = P + T
        self.single_observation_space = spaces.Dict(
            {
                "input_ids": spaces.Box(0, V - 1, (L,), np.int64),
                "attention_mask": spaces.Box(0, 1, (L,), np.int64),
            }
        )
        self.observation_space = spaces.Dict(
            {
                "input_ids": spaces.Box(0, V - 1, (num_envs, L), np.int64),
                "attention_mask": spaces.Box(0, 1, (num_envs, L), np.int64),
            }
        )
        self.single_action_space = spaces.Discrete(V)
        self.action_space = spaces.MultiDiscrete([V] * num_envs)

        # Reward, and the one π_ref of the run.
        self.reward = make_reward(
            reward if reward is not None else task.reward,
            task_scorer=task.scorer() if task.scorer is not None else None,
            fine_grained=task.fine_grained,
            tokenizer=tokenizer,
            **(reward_kwargs or {}),
        )
        self.steps_reference, requested = reference_request(self.reward)
        if ref_model is not None and requested is not None and ref_model is not requested and ref_model != requested:
            raise ValueError(
                f"ref_model={ref_model!r} differs from the reward's ref_model={requested!r}; a run has one π_ref"
            )
        self._ref_source = ref_model if ref_model is not None else requested
        self._reference: Reference | None = None
        self._ref_stepper: IncrementalLogprobs | None = None
        self._trust_remote_code = trust_remote_code
        if self.steps_reference:
            self.reference  # load now: a bad name fails here, and a model instance is copied untrained

        # Device buffers, preallocated once.
        B = num_envs
        self._input_ids = torch.full((B, L), self.pad_token_id, dtype=torch.long, device=self.device)
        self._attention_mask = torch.zeros((B, L), dtype=torch.long, device=self.device)
        self._attention_bool = torch.zeros((B, L), dtype=torch.bool, device=self.device)  # the mask rewards see
        self._response_lengths = torch.zeros(B, dtype=torch.long, device=self.device)
        self._alive = torch.zeros(B, dtype=torch.bool, device=self.device)
        self._rows = torch.arange(B, device=self.device)
        self._component_totals: dict[str, torch.Tensor] = {}
        self._prompt_texts: list[str] = [""] * B
        self._row_prompts: tuple = (None,) * B  # each row's prompt as given (text, ids or chat messages)
        self._row_columns: dict[str, tuple] = {}  # column -> B values; replaced, never mutated
        self._needs_reset = True
        self._steps_since_reset = 0

    # ------------------------------------------------------------------ reference
    @property
    def reference(self) -> Reference:
        """π_ref, built once on first use: ``ref_model`` if given, else the policy's starting weights."""
        if self._reference is None:
            source = self._ref_source if self._ref_source is not None else self.model
            if source is self.model and isinstance(source, torch.nn.Module):
                source = frozen_copy(source)  # an agent may train the env's model instance in place
            self._reference = Reference.load(
                source, temperature=self.sampling.temperature, device=self.device,
                trust_remote_code=self._trust_remote_code,
            )
        return self._reference

    def set_reference(self, reference: Reference) -> None:
        """Use ``reference`` as π_ref (e.g. a LoRA policy's base with adapters disabled).

        Its temperature must be the env's: a penalty and a ratio at different temperatures would
        compare different distributions. Takes effect at the next ``reset``.
        """
        if reference.temperature != self.sampling.temperature:
            raise ValueError(
                f"the reference is scored at temperature {reference.temperature}, the env samples at "
                f"{self.sampling.temperature}; they must agree"
            )
        self._reference, self._ref_stepper = reference, None
        self._needs_reset = True

    # ------------------------------------------------------------------ prompts
    def _resolve_stop_tokens(self, stop_token_ids, V: int) -> list[int]:
        if stop_token_ids == "eos":
            eos = getattr(self.tokenizer, "eos_token_id", None)
            stop_token_ids = [] if eos is None else [eos]
        stop = [int(t) for t in (stop_token_ids or [])]
        bad = [t for t in stop if not 0 <= t < V]
        if bad:
            raise ValueError(f"stop_token_ids {bad} are outside [0, {V})")
        return stop

    def _draw_prompts(self, n: int, options: dict | None) -> tuple[list, list[list[int]], dict[str, list]]:
        """``n`` rows of (prompts as given, their token ids, their columns), groups repeated."""
        return self._pool.draw(n, options, self.np_random, self.shard, self.max_prompt_tokens)

    def _write_prompts(self, rows: torch.Tensor, raw: list, prompts: list[list[int]], columns: dict[str, list]) -> None:
        """Left-pad ``prompts`` into the buffer rows ``rows`` (host list -> one device copy); record
        each row's prompt as given (``raw``) and its ``columns``."""
        P, n = self.max_prompt_tokens, len(prompts)
        ids = torch.full((n, P), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((n, P), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, P - len(p) :] = torch.tensor(p)
            mask[i, P - len(p) :] = 1
        self._input_ids[rows] = self.pad_token_id
        self._attention_mask[rows] = 0
        self._input_ids[rows, :P] = ids.to(self.device)
        self._attention_mask[rows, :P] = mask.to(self.device)
        self._attention_bool[rows] = self._attention_mask[rows].bool()
        self._response_lengths[rows] = 0
        self._alive[rows] = True
        for name, total in self._component_totals.items():
            self._component_totals[name] = total.index_fill(0, rows, 0.0)
        if self.tokenizer is not None:
            texts = self.tokenizer.batch_decode(prompts, skip_special_tokens=False)
        else:
            texts = [" ".join(map(str, p)) for p in prompts]
        row_list = rows.tolist()
        for r, text in zip(row_list, texts):
            self._prompt_texts[r] = text
        self._set_row_data(row_list, raw, columns)
        start_mask = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        start_mask[rows] = True
        if self.steps_reference:
            if self._ref_stepper is None:
                self._ref_stepper = self.reference.stepper()
            if len(row_list) == self.num_envs:
                self._ref_stepper.start(self._input_ids[:, :P], self._attention_bool[:, :P])
            else:  # a partial reset cannot restart rows of a shared cache: re-prefill on the next step
                self._ref_stepper.invalidate()
        self.reward.reset(
            EpisodeStart(
                prompt_ids=self._input_ids[:, :P],
                prompt_mask=self._attention_bool[:, :P],
                prompt_texts=tuple(self._prompt_texts),
                rows=start_mask,
                max_new_tokens=self.max_new_tokens,
                tokenizer=self.tokenizer,
                prompts=self._row_prompts,
                columns=self._row_columns,
                temperature=self.sampling.temperature,
            )
        )

    def _set_row_data(self, rows: list[int], raw: list, columns: dict[str, list]) -> None:
        """Store the prompts as given and the columns of ``rows``. New tuples each time, so the
        ``info["columns"]`` handed out earlier keep describing their own episodes."""
        if len(rows) == self.num_envs:  # a full reset: these columns replace the old ones
            self._row_columns = {name: (None,) * self.num_envs for name in columns}
        prompts = list(self._row_prompts)
        updated = {name: list(values) for name, values in self._row_columns.items()}
        for name in columns:
            updated.setdefault(name, [None] * self.num_envs)
        for i, r in enumerate(rows):
            prompts[r] = raw[i]
            for name, values in updated.items():
                values[r] = columns[name][i] if name in columns else None
        self._row_prompts = tuple(prompts)
        self._row_columns = {name: tuple(values) for name, values in updated.items()}

    # ------------------------------------------------------------------ API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._write_prompts(self._rows, *self._draw_prompts(self.num_envs, options))
        self._needs_reset = False
        self._steps_since_reset = 0
        return self._observation(), {"prompt_texts": list(self._prompt_texts), "columns": self._row_columns}

    def step(self, actions, logprobs: torch.Tensor | None = None):
        """Append one token per row. ``logprobs``: optional (B,) log π_θ(a_t|s_t) for the reward."""
        if self._needs_reset:
            raise RuntimeError("step() called before reset(); call env.reset() first")
        P, T = self.max_prompt_tokens, self.max_new_tokens
        if self._steps_since_reset >= T and self.metadata["autoreset_mode"] == AutoresetMode.DISABLED:
            raise RuntimeError(
                f"every episode in the batch ended (max_new_tokens={T}); call env.reset() "
                "(autoreset_mode='disabled' waits for a synchronous reset)"
            )
        actions = self._as_actions(actions)
        if logprobs is not None:
            logprobs = torch.as_tensor(logprobs, device=self.device)
            if logprobs.shape != (self.num_envs,) or not logprobs.is_floating_point():
                raise ValueError(
                    f"logprobs must be a float tensor of shape ({self.num_envs},), got "
                    f"{tuple(logprobs.shape)} {logprobs.dtype}"
                )

        acted = self._alive.clone()  # (B,)
        actions = torch.where(acted, actions, self.pad_token_id)  # (B,) pad on rows that already ended
        if self.metadata["autoreset_mode"] == AutoresetMode.DISABLED:
            # Batch-synchronous: every acting row writes column P + t. A row that ended earlier holds
            # a pad with mask 0 there, which is exactly what writing (pad, acted=False) leaves.
            column = P + self._steps_since_reset
            self._input_ids[:, column] = actions
            self._attention_mask[:, column] = acted
            self._attention_bool[:, column] = acted
        else:
            # SAME_STEP: ended rows restarted last step, so every row acts, at its own column (< P+T).
            columns = (P + self._response_lengths)[:, None]  # (B, 1)
            self._input_ids.scatter_(1, columns, actions[:, None])
            self._attention_mask.scatter_(1, columns, acted[:, None].long())
            self._attention_bool.scatter_(1, columns, acted[:, None])
        self._response_lengths += acted
        if self.stop_token_ids:
            stopped = acted & torch.isin(actions, self._stop_ids)  # (B,)
            if self.min_new_tokens:
                stopped &= self._response_lengths >= self.min_new_tokens  # earlier, a stop token is ordinary
        else:
            stopped = torch.zeros_like(acted)  # (B,)
        hit_limit = acted & ~stopped & (self._response_lengths >= T)  # (B,) the horizon, not a time limit
        terminated = stopped | hit_limit  # (B,) both end the MDP (see Episode End)
        truncated = torch.zeros_like(terminated)  # (B,)
        ended = terminated
        self._alive &= ~ended
        self._steps_since_reset += 1

        ref_logprobs = None
        if self.steps_reference:
            ref_logprobs = self._ref_stepper(
                self._input_ids, self._attention_bool, P, self._response_lengths, actions, acted
            )  # (B,)
            ref_logprobs = torch.where(acted, ref_logprobs, 0.0)

        components = as_components(
            self.reward(
                StepBatch(
                    input_ids=self._input_ids,
                    attention_mask=self._attention_bool,
                    prompt_width=P,
                    response_lengths=self._response_lengths,
                    actions=actions,
                    acted=acted,
                    ended=ended,
                    action_logprobs=logprobs,
                    prompt_texts=tuple(self._prompt_texts),
                    tokenizer=self.tokenizer,
                    prompts=self._row_prompts,
                    columns=self._row_columns,
                    synchronous=self.metadata["autoreset_mode"] == AutoresetMode.DISABLED,
                    ref_logprobs=ref_logprobs,
                )
            )
        )
        rewards = torch.zeros(self.num_envs, dtype=torch.float32, device=self.device)  # (B,)
        late_rewards = torch.zeros(self.num_envs, dtype=torch.float32, device=self.device)  # (B,)
        for name, values in components.items():
            values = values.to(torch.float32)  # (B,)
            # A value on a row that did not act pays that row's just-ended episode late (base.py).
            rewards = rewards + torch.where(acted, values, 0.0)
            late_rewards = late_rewards + torch.where(acted, 0.0, values)
            total = self._component_totals.get(name)
            # Totals are replaced, never updated in place, so the info dicts handed out stay valid.
            self._component_totals[name] = values.clone() if total is None else total + values

        observation = self._observation()
        info: dict[str, Any] = {
            "reward_components": dict(self._component_totals),
            "late_rewards": late_rewards,
            "hit_max_new_tokens": hit_limit,
            "columns": self._row_columns,
        }
        if ref_logprobs is not None:
            info["ref_logprobs"] = ref_logprobs
        if self.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP:
            observation, info = self._autoreset(ended, observation, info)
        return observation, rewards, terminated, truncated, info

    def _autoreset(self, ended: torch.Tensor, observation, info):
        """SAME_STEP autoreset: finished rows restart now; their last obs/info go in info."""
        ended_rows = ended.nonzero()[:, 0]  # host read: this mode is for third-party agents
        if len(ended_rows) == 0:
            return observation, info
        final_obs = {k: v.clone() for k, v in observation.items()}
        self._write_prompts(ended_rows, *self._draw_prompts(len(ended_rows), None))
        info = {
            **info, "columns": self._row_columns, "final_obs": final_obs, "_final_obs": ended.clone(),
            "final_info": dict(info), "_final_info": ended.clone(),
        }
        return self._observation(), info

    def _as_actions(self, actions) -> torch.Tensor:
        if isinstance(actions, torch.Tensor):
            tensor = actions
        else:
            array = np.asarray(actions)
            if array.dtype == object:
                raise ValueError(f"actions must be integer token ids, got {actions!r}")
            tensor = torch.from_numpy(array)
        if tensor.dtype == torch.bool or tensor.is_floating_point() or tensor.is_complex():
            raise ValueError(
                f"actions must be integer token ids; got dtype {tensor.dtype} (nothing is cast)"
            )
        if tuple(tensor.shape) != (self.num_envs,):
            raise ValueError(
                f"actions must have shape ({self.num_envs},), one token id per row; got {tuple(tensor.shape)}"
            )
        tensor = tensor.to(self.device, torch.long, non_blocking=True)
        if self.check_actions:
            bad = (tensor < 0) | (tensor >= self.vocab_size)
            if bad.any():
                row = int(bad.nonzero()[0, 0])
                raise ValueError(
                    f"action {int(tensor[row])} at row {row} is outside the action space [0, {self.vocab_size})"
                )
        return tensor

    def _observation(self) -> dict[str, torch.Tensor]:
        if self.copy_observations:
            return {"input_ids": self._input_ids.clone(), "attention_mask": self._attention_mask.clone()}
        return {"input_ids": self._input_ids, "attention_mask": self._attention_mask}

    # ------------------------------------------------------------------ helpers for agents
    @property
    def prompt_width(self) -> int:
        """P: the column where generated tokens start."""
        return self.max_prompt_tokens

    @property
    def response_lengths(self) -> torch.Tensor:
        """(B,) tokens generated so far per row (a view, on device)."""
        return self._response_lengths

    @property
    def prompt_texts(self) -> tuple[str, ...]:
        """The decoded prompt of each row's current episode."""
        return tuple(self._prompt_texts)

    @property
    def row_prompts(self) -> tuple:
        """Each row's prompt as given (text, token ids or chat messages) for its current episode:
        with ``info["columns"]``, what ``reset(options={"prompts": ...})`` takes to replay a row's prompt."""
        return self._row_prompts

    @property
    def prompt_pool(self):
        """Every prompt the env draws from, with its columns (a :class:`~tokengym.envs.records.PromptRecords`)."""
        records = self._pool.records
        return PromptRecords(list(records.prompts), {name: list(values) for name, values in records.columns.items()})

    @property
    def row_columns(self) -> dict[str, tuple]:
        """Each prompt column's per-row values for the current episodes (``info["columns"]``)."""
        return dict(self._row_columns)

    @property
    def all_done(self) -> torch.Tensor:
        """0-dim bool tensor on device: no row is still generating (read it sparingly on CUDA)."""
        return ~self._alive.any()

    def render(self) -> list[str] | None:
        if self.render_mode != "ansi":
            return None
        P = self.max_prompt_tokens
        rows = self._input_ids.tolist()
        lengths = self._response_lengths.tolist()
        out = []
        for text, ids, n in zip(self._prompt_texts, rows, lengths):
            response = ids[P : P + n]
            decoded = self.tokenizer.decode(response) if self.tokenizer is not None else str(response)
            out.append(f"{text}|{decoded}")
        return out
