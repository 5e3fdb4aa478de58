"""A Hugging Face sequence classifier as a scorer (a reward model), and the tokenisation it shares
with reward-model training (``rewards/reward_model.py``)."""
from __future__ import annotations

import os
from typing import Any, Sequence

import torch

__all__ = ["SequenceClassifierScorer", "encode_texts", "prepare_pad_token", "model_max_length"]


def encode_texts(
    tokenizer: Any, texts: Sequence[str], max_length: int, pad_id: int, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenise ``texts`` and right-pad them into (N, L) ids and a bool mask.

    Over-long texts keep their *last* ``max_length`` tokens: a reward model reads the completion,
    which sits at the end. Shared by :class:`SequenceClassifierScorer` and reward-model training so
    both see exactly the same tokens.
    """
    encoded = tokenizer(list(texts))["input_ids"]
    encoded = [ids[-max_length:] if len(ids) > max_length else ids for ids in encoded]
    width = max(1, max(len(ids) for ids in encoded))
    ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.bool)
    for i, seq in enumerate(encoded):
        ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[i, : len(seq)] = True
    return ids.to(device), mask.to(device)


def prepare_pad_token(model: torch.nn.Module, tokenizer: Any) -> int:
    """Make batching work: GPT-2-like models have no pad token, so reuse EOS (in both the tokenizer
    and ``model.config``, which sequence classification reads to find each row's last token)."""
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has neither a pad nor an eos token; set tokenizer.pad_token")
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    return int(tokenizer.pad_token_id)


def model_max_length(model: torch.nn.Module, cap: int = 1024) -> int:
    from tokengym.lm.loading import max_positions

    return min(cap, max_positions(model.config) or cap)


class SequenceClassifierScorer:
    """A reward model: ``AutoModelForSequenceClassification`` scored on ``prompt + completion``;
    returns one logit per text.

    ``model``: a directory, ``"embedded"``-style name or hub name (loaded with its tokenizer), or a
    module (then ``tokenizer`` is required). ``label``: which logit is the reward — optional for a
    one-label (Bradley–Terry) model; for a classifier with several labels, its index or its name in
    ``config.label2id`` (e.g. ``"POSITIVE"``). Texts are batched ``batch_size`` at a time on
    ``device``, right-padded, and truncated from the left to the model's context.
    ``trust_remote_code`` is off unless asked for.
    """

    batched = True
    """Called once per batch of finished episodes (a forward pass per call is its cost)."""

    def __init__(
        self,
        model: str | os.PathLike | torch.nn.Module,
        tokenizer: Any = None,
        device: str | torch.device = "cpu",
        batch_size: int = 32,
        name: str | None = None,
        label: int | str | None = None,
        trust_remote_code: bool = False,
    ):
        from tokengym.lm.loading import load_tokenizer, resolve_model_name

        if isinstance(model, torch.nn.Module):
            if tokenizer is None:
                raise ValueError("SequenceClassifierScorer: pass tokenizer= together with a model module")
            self.name = name or "reward_model"
        else:
            from transformers import AutoModelForSequenceClassification

            path = resolve_model_name(model)
            tokenizer = tokenizer if tokenizer is not None else load_tokenizer(model, trust_remote_code=trust_remote_code)
            model = AutoModelForSequenceClassification.from_pretrained(
                path, local_files_only=os.path.exists(path), trust_remote_code=trust_remote_code
            )
            self.name = name or f"rm:{os.path.basename(os.fspath(path).rstrip('/'))}"
        self.label = self._label_index(model.config, label)
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.pad_id = prepare_pad_token(self.model, tokenizer)
        self.max_length = model_max_length(self.model)
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, prompts: list[str], completions: list[str], **kwargs: Any) -> list[float]:
        texts = [p + c for p, c in zip(prompts, completions)]
        out: list[float] = []
        for i in range(0, len(texts), self.batch_size):
            ids, mask = encode_texts(self.tokenizer, texts[i : i + self.batch_size], self.max_length, self.pad_id, self.device)
            logits = self.model(input_ids=ids, attention_mask=mask.long()).logits  # (b, num_labels)
            out.extend(logits[:, self.label].float().tolist())
        return out

    @staticmethod
    def _label_index(config: Any, label: int | str | None) -> int:
        """The logit column of ``label`` (an index or a name in ``config.label2id``)."""
        n = config.num_labels
        names = dict(getattr(config, "label2id", None) or {})
        if label is None:
            if n != 1:
                raise ValueError(f"the reward model has {n} labels {sorted(names)}; choose one with label= (--reward-label)")
            return 0
        if isinstance(label, str) and not label.lstrip("-").isdigit():
            if label not in names:
                raise ValueError(f"label {label!r} is not one of the reward model's labels {sorted(names)}")
            return int(names[label])
        index = int(label)
        if not 0 <= index < n:
            raise ValueError(f"label {index} is outside the reward model's {n} labels (0..{n - 1})")
        return index
