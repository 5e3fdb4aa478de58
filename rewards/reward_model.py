"""Reward-model training from preferences (docs/rewards.md; seeds 001, 002, 003).

A reward model is a Hugging Face ``AutoModelForSequenceClassification`` with one label, initialised
from a causal LM, trained on ``(prompt, chosen, rejected)`` triples to maximise

    Σ U(r(x, y_w) − r(x, y_l) − margin)  −  center_coef · Σ (r(x, y_w) + r(x, y_l))²

and saved with ``save_pretrained``, so :class:`~tokengym.rewards.classifier.SequenceClassifierScorer`
loads it as a holistic or per-segment scorer.

The utility ``U`` (Bradley–Terry's ``log σ`` by default, or one of Song et al. 2023's) is
:mod:`tokengym.rewards.utilities`; the reward-collapse reproduction is
:func:`tokengym.benchmarks.reproduce.reward_collapse_experiment`.
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from tokengym.lm.io import atomic_write_dir, read_jsonl
from tokengym.rewards.classifier import encode_texts, model_max_length, prepare_pad_token
from tokengym.rewards.scorers import score_texts
from tokengym.rewards.utilities import make_utility, preference_loss

__all__ = ["train_reward_model", "load_pairs_jsonl", "synthetic_pairs", "sentiment_sentence"]

# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------

PAIR_FIELDS = ("prompt", "chosen", "rejected")


def load_pairs_jsonl(path: str | os.PathLike) -> list[dict[str, str]]:
    """Preference pairs from a JSON-lines file, one ``{"prompt", "chosen", "rejected"}`` object per
    line (extra fields are kept; blank lines are skipped)."""
    pairs = []
    for line_no, record in read_jsonl(path):
        for field in PAIR_FIELDS:
            if field not in record:
                raise ValueError(f"{path}:{line_no}: missing field {field!r} (need {', '.join(PAIR_FIELDS)})")
            if not isinstance(record[field], str):
                raise ValueError(f"{path}:{line_no}: field {field!r} must be a string, got {type(record[field]).__name__}")
        pairs.append(record)
    if not pairs:
        raise ValueError(f"{path}: no preference pairs")
    return pairs


_SUBJECTS = ["the movie", "this book", "the food", "our trip", "the service", "my day", "the song", "the hotel"]
_VERBS = ["was", "felt", "seemed"]
_POSITIVE = ["wonderful", "great", "lovely", "excellent", "happy", "delightful", "amazing", "good"]
_NEGATIVE = ["awful", "terrible", "horrible", "sad", "bad", "boring", "disgusting", "dreadful"]
_NEUTRAL = ["long", "new", "quiet", "blue", "ordinary", "short"]


def sentiment_sentence(rng: random.Random) -> str:
    """A short template sentence with two adjectives drawn from positive, negative and neutral
    words, e.g. "the food was lovely and boring" (the recipe behind ``rm train --synthetic``)."""
    adjectives = _POSITIVE + _NEGATIVE + _NEUTRAL
    return f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(adjectives)} and {rng.choice(adjectives)}"


def synthetic_pairs(
    texts: Sequence[str] | Callable[[random.Random], str],
    scorer: Any,
    n: int,
    *,
    prompts: Sequence[str] = ("",),
    min_gap: float = 0.0,
    seed: int = 0,
) -> list[dict[str, str]]:
    """``n`` preference pairs labelled by a scorer: draw two completions (from ``texts`` or a
    generator ``rng -> text``) and a prompt, keep the pair if the scores differ by more than
    ``min_gap`` (ties are never kept), the higher-scored one is ``chosen``."""
    rng = random.Random(seed)
    draw = texts if callable(texts) else (lambda r: r.choice(texts))
    pairs: list[dict[str, str]] = []
    attempts = 0
    while len(pairs) < n:
        attempts += 1
        if attempts > 50:
            raise ValueError(f"synthetic_pairs: could not find {n} pairs with a score gap > {min_gap}; found {len(pairs)}")
        batch = [(rng.choice(list(prompts)), draw(rng), draw(rng)) for _ in range(2 * (n - len(pairs)))]
        scores = score_texts(scorer, [p for p, _, _ in batch] * 2, [a for _, a, _ in batch] + [b for _, _, b in batch])
        for (prompt, a, b), s_a, s_b in zip(batch, scores[: len(batch)], scores[len(batch) :]):
            if abs(s_a - s_b) > min_gap and len(pairs) < n:
                chosen, rejected = (a, b) if s_a > s_b else (b, a)
                pairs.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return pairs


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


def _load_classifier(base_model: Any, tokenizer: Any, device: torch.device):
    if isinstance(base_model, torch.nn.Module):
        if getattr(base_model.config, "num_labels", None) != 1 or not hasattr(base_model, "score"):
            raise ValueError(
                "base_model must be a sequence-classification model with num_labels=1, or the name/directory "
                "of a causal LM to initialise one from"
            )
        if tokenizer is None:
            raise ValueError("pass tokenizer= together with a model module")
        model = base_model
    else:
        from transformers import AutoModelForSequenceClassification

        from tokengym.lm.loading import load_tokenizer, resolve_model_name

        path = resolve_model_name(base_model)
        tokenizer = tokenizer if tokenizer is not None else load_tokenizer(base_model)
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, local_files_only=os.path.exists(path))
    prepare_pad_token(model, tokenizer)
    return model.to(device), tokenizer


def _scores(model, tokenizer, texts: Sequence[str], max_length: int, device) -> torch.Tensor:
    ids, mask = encode_texts(tokenizer, texts, max_length, model.config.pad_token_id, device)
    return model(input_ids=ids, attention_mask=mask.long()).logits[:, 0].float()  # (N,)


def _save(model, tokenizer, out_dir: Path, metrics: Mapping[str, Any]) -> None:
    """``save_pretrained`` the model and tokenizer, with ``training_metrics.json``, atomically."""

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "training_metrics.json").write_text(json.dumps(metrics, indent=2))

    atomic_write_dir(out_dir, write)


def train_reward_model(
    pairs: Sequence[Mapping[str, str]],
    base_model: str | os.PathLike | torch.nn.Module = "embedded",
    tokenizer: Any = None,
    *,
    epochs: int = 1,
    lr: float = 5e-5,
    batch_size: int = 16,
    utility: str | Any = "log-sigmoid",
    margin: float = 0.0,
    center_coef: float = 0.0,
    val_fraction: float = 0.1,
    seed: int = 0,
    out_dir: str | os.PathLike | None = None,
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Train a reward model on ``pairs`` (dicts with prompt/chosen/rejected) and return metrics.

    ``base_model``: a causal LM name/directory (``"embedded"``, a local dir, a hub name; a
    one-label classification head is added) or a sequence-classification module. Texts are
    ``prompt + completion``, encoded exactly as :class:`SequenceClassifierScorer` encodes them.
    A seeded ``val_fraction`` of pairs is held out; metrics include its pairwise accuracy
    (chosen scored strictly higher). With ``out_dir`` the model and tokenizer are saved there
    (atomically) with ``training_metrics.json``; the trained model is in ``metrics["model"]``.
    """
    from tqdm.auto import tqdm

    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise ValueError(f"need epochs >= 1, batch_size >= 1 and lr > 0; got {epochs}, {batch_size}, {lr}")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    pairs = list(pairs)
    utility = make_utility(utility)
    device = torch.device(device)
    torch.manual_seed(seed)
    model, tokenizer = _load_classifier(base_model, tokenizer, device)
    max_length = model_max_length(model)

    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = int(round(val_fraction * len(pairs)))
    val = [pairs[i] for i in order[:n_val]]
    train = [pairs[i] for i in order[n_val:]]
    if not train:
        raise ValueError(f"no training pairs left ({len(pairs)} pairs, val_fraction={val_fraction})")

    def batch_loss(batch):
        prompts = [p["prompt"] for p in batch]
        scores = _scores(model, tokenizer, [p["prompt"] + p["chosen"] for p in batch] + [p["prompt"] + p["rejected"] for p in batch], max_length, device)
        chosen, rejected = scores[: len(batch)], scores[len(batch) :]
        return preference_loss(chosen, rejected, utility, prompts, margin, center_coef), chosen, rejected

    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    shuffle = random.Random(seed)
    history = []
    for _ in tqdm(range(epochs), desc="rm epochs", disable=not progress):
        model.train()
        shuffle.shuffle(train)
        losses = []
        for i in range(0, len(train), batch_size):
            loss, _, _ = batch_loss(train[i : i + batch_size])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        history.append(sum(losses) / len(losses))

    metrics: dict[str, Any] = {"train_loss": history[-1], "train_loss_per_epoch": history, "n_train": len(train),
                               "n_val": len(val), "val_loss": None, "val_accuracy": None, "utility": repr(utility)}
    model.eval()
    if val:
        with torch.no_grad():
            losses, correct = [], 0
            for i in range(0, len(val), batch_size):
                batch = val[i : i + batch_size]
                loss, chosen, rejected = batch_loss(batch)
                losses.append(loss.item() * len(batch))
                correct += int((chosen > rejected).sum())
        metrics["val_loss"] = sum(losses) / len(val)
        metrics["val_accuracy"] = correct / len(val)
    if out_dir is not None:
        _save(model, tokenizer, Path(out_dir), metrics)
        metrics["out_dir"] = str(out_dir)
    metrics["model"] = model
    return metrics
