"""Reward-model training from preferences (docs/rewards.md; seeds 001, 002, 003).

A reward model is a Hugging Face ``AutoModelForSequenceClassification`` with one label, initialised
from a causal LM, trained on ``(prompt, chosen, rejected)`` triples to maximise

    Σ U(r(x, y_w) − r(x, y_l) − margin)  −  center_coef · Σ (r(x, y_w) + r(x, y_l))²

and saved with ``save_pretrained``, so :class:`~tokengym.rewards.scorers.SequenceClassifierScorer`
loads it as a holistic or per-segment scorer.

Utilities (Song et al. 2023, "Reward collapse in aligning large language models"; seed 003):

* ``LogSigmoid(σ)``: ``U(x) = log σ(x/σ)``. With σ = 1 on the raw scores this is the Bradley–Terry
  loss ``−log σ(r_w − r_l)`` of InstructGPT, the default.
* ``Power(γ)``: ``U(x) = x^γ``, 0 < γ ≤ 1 (γ = 1 is ``U(x) = x``): polarised rewards.
* ``NegPower(γ)``: ``U(x) = −x^(−γ)``, 0 < γ ≤ 1 (γ = 1 is ``−1/x``): evenly spread rewards.
* ``Log()``: ``U(x) = log x`` (the γ = 0 member of the ``−x^(−γ)`` family).
* ``PromptAware(choose)``: ``U_prom`` chosen per prompt, e.g. ``x`` for closed-ended prompts
  and ``−1/x`` for open-ended ones, the paper's prompt-aware choice.

How a utility is applied, following the paper: its analysis assumes bounded rewards,
``0 ≤ R(prom, compl) ≤ 1``, and applies ``U`` to the difference of rewards. ``x^γ``, ``−x^(−γ)``
and ``log x`` only make sense there (on unbounded scores ``x^γ`` has no maximum), so these
*bounded* utilities read the reward as ``sigmoid(score)`` and take ``U(sigmoid(s_w) −
sigmoid(s_l))``. The difference lies in (−1, 1), but these ``U`` are defined only for x > 0; the
paper extends them continuously, and here below ``eps`` each is continued by its tangent at
``eps``, which keeps it increasing and concave (so the problem stays convex in the rewards) and
gives a misordered pair a finite, useful gradient. ``LogSigmoid`` is defined everywhere: it
applies to the raw scores (plain Bradley–Terry) unless ``bounded=True``, the paper's set-up used in
:func:`reward_collapse_experiment`. A bounded reward model still returns the raw score from
``SequenceClassifierScorer``; ``sigmoid`` of it is a monotone map.
"""
from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

from tokengym.rewards.scorers import VaderSentiment, encode_texts, model_max_length, prepare_pad_token, score_texts

__all__ = [
    "LogSigmoid",
    "Power",
    "NegPower",
    "Log",
    "PromptAware",
    "make_utility",
    "preference_loss",
    "train_reward_model",
    "load_pairs_jsonl",
    "synthetic_pairs",
    "sentiment_sentence",
    "reward_collapse_experiment",
    "add_cli",
]

# ---------------------------------------------------------------------------------------------
# Utilities
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogSigmoid:
    """``U(x) = log σ(x / sigma)``."""

    sigma: float = 1.0
    bounded: bool = False
    """False: applied to raw scores (Bradley–Terry). True: to sigmoid rewards in [0, 1]."""

    def __post_init__(self):
        if not self.sigma > 0:
            raise ValueError(f"LogSigmoid.sigma must be > 0, got {self.sigma}")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.logsigmoid(x / self.sigma)


class _Bounded:
    """A utility defined for x > 0, continued below ``eps`` by its tangent there."""

    bounded = True
    eps: float

    def _f(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _df(self, x: float) -> float:
        raise NotImplementedError

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        eps = torch.tensor(self.eps, dtype=x.dtype, device=x.device)
        tangent = self._f(eps) + self._df(self.eps) * (x - eps)
        return torch.where(x >= eps, self._f(x.clamp(min=self.eps)), tangent)


def _check_gamma(name: str, gamma: float, eps: float) -> None:
    if not 0 < gamma <= 1:
        raise ValueError(f"{name}.gamma must be in (0, 1], got {gamma}")
    if not 0 < eps < 1:
        raise ValueError(f"{name}.eps must be in (0, 1), got {eps}")


@dataclass(frozen=True)
class Power(_Bounded):
    """``U(x) = x^γ`` on sigmoid rewards (Song et al., class 1)."""

    gamma: float = 1.0
    eps: float = 0.02

    def __post_init__(self):
        _check_gamma("Power", self.gamma, self.eps)

    def _f(self, x):
        return x.pow(self.gamma)

    def _df(self, x):
        return self.gamma * x ** (self.gamma - 1)


@dataclass(frozen=True)
class NegPower(_Bounded):
    """``U(x) = −x^(−γ)`` on sigmoid rewards (Song et al., class 2)."""

    gamma: float = 1.0
    eps: float = 0.02

    def __post_init__(self):
        _check_gamma("NegPower", self.gamma, self.eps)

    def _f(self, x):
        return -x.pow(-self.gamma)

    def _df(self, x):
        return self.gamma * x ** (-self.gamma - 1)


@dataclass(frozen=True)
class Log(_Bounded):
    """``U(x) = log x`` on sigmoid rewards (Song et al., class 2 with γ = 0)."""

    eps: float = 0.02

    def __post_init__(self):
        if not 0 < self.eps < 1:
            raise ValueError(f"Log.eps must be in (0, 1), got {self.eps}")

    def _f(self, x):
        return x.log()

    def _df(self, x):
        return 1.0 / x


class PromptAware:
    """``U_prom``: a utility chosen per prompt by ``choose(prompt) -> utility``."""

    def __init__(self, choose: Callable[[str], Any]):
        self.choose = choose

    def __repr__(self) -> str:
        return f"PromptAware({getattr(self.choose, '__name__', self.choose)!r})"


UTILITY_NAMES = ("log-sigmoid[:σ]", "power[:γ]", "neg-power[:γ]", "log")


def make_utility(spec: str | Any) -> Any:
    """A utility from a name (``"log-sigmoid"``, ``"log-sigmoid:2"``, ``"power:0.5"``,
    ``"neg-power:1"``, ``"log"``) or an object (returned as is)."""
    if not isinstance(spec, str):
        return spec
    name, _, arg = spec.partition(":")
    try:
        value = float(arg) if arg else None
    except ValueError:
        raise ValueError(f"utility {spec!r}: {arg!r} is not a number") from None
    if name == "log-sigmoid":
        return LogSigmoid(value or 1.0)
    if name == "power":
        return Power(value or 1.0)
    if name == "neg-power":
        return NegPower(value or 1.0)
    if name == "log" and value is None:
        return Log()
    raise ValueError(f"unknown utility {spec!r}; valid: {', '.join(UTILITY_NAMES)}")


def preference_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    utility: Any = LogSigmoid(),
    prompts: Sequence[str] | None = None,
    margin: float = 0.0,
    center_coef: float = 0.0,
) -> torch.Tensor:
    """``−mean U(r_w − r_l − margin) + center_coef · mean((s_w + s_l)²)`` for (N,) raw scores.

    ``prompts`` is needed for a :class:`PromptAware` utility. The centering penalty acts on the raw
    scores and pulls each pair's mean score towards 0 (Eisenstein et al. 2023)."""
    if isinstance(utility, PromptAware):
        if prompts is None or len(prompts) != chosen.shape[0]:
            raise ValueError("a PromptAware utility needs one prompt per pair")
        per_pair = [utility.choose(p) for p in prompts]
    else:
        per_pair = [utility] * chosen.shape[0]
    groups: dict[Any, list[int]] = {}
    for i, u in enumerate(per_pair):
        groups.setdefault(u, []).append(i)
    values = torch.empty_like(chosen)  # (N,) U per pair
    for u, rows in groups.items():
        idx = torch.tensor(rows, device=chosen.device)
        s_w, s_l = chosen[idx], rejected[idx]
        if getattr(u, "bounded", False):
            s_w, s_l = torch.sigmoid(s_w), torch.sigmoid(s_l)
        values[idx] = u(s_w - s_l - margin)
    loss = -values.mean()
    if center_coef:
        loss = loss + center_coef * (chosen + rejected).pow(2).mean()
    return loss


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------

PAIR_FIELDS = ("prompt", "chosen", "rejected")


def load_pairs_jsonl(path: str | os.PathLike) -> list[dict[str, str]]:
    """Preference pairs from a JSON-lines file, one ``{"prompt", "chosen", "rejected"}`` object per
    line (extra fields are kept; blank lines are skipped)."""
    pairs = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{line_no}: invalid JSON ({err.msg})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{line_no}: expected a JSON object, got {type(record).__name__}")
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


def _save_atomic(model, tokenizer, out_dir: Path, metrics: Mapping[str, Any]) -> None:
    """``save_pretrained`` into a temp dir beside ``out_dir``, then rename it into place."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "training_metrics.json").write_text(json.dumps(metrics, indent=2))
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)


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
        _save_atomic(model, tokenizer, Path(out_dir), metrics)
        metrics["out_dir"] = str(out_dir)
    metrics["model"] = model
    return metrics


# ---------------------------------------------------------------------------------------------
# Reward collapse (Song et al. 2023)
# ---------------------------------------------------------------------------------------------


def _wasserstein_1d(a: torch.Tensor, b: torch.Tensor) -> float:
    """W1 between two equal-size samples: mean gap between their sorted values."""
    return (a.flatten().sort().values - b.flatten().sort().values).abs().mean().item()


def reward_collapse_experiment(
    n_prompts: int = 4, n_completions: int = 8, steps: int = 600, hidden: int = 32, lr: float = 5e-2, seed: int = 0
) -> dict[str, Any]:
    """Reward collapse, in the paper's set-up at toy scale.

    ``n_prompts`` open-ended and ``n_prompts`` closed-ended prompts each have ``n_completions``
    completions with a full ranking (every ordered pair is a training pair). A completion is a
    feature vector: its latent quality, which sets the ranking, plus three noise features. The
    reward model is an MLP over a learned prompt embedding and the completion features with a
    sigmoid output, so rewards lie in [0, 1] as the paper assumes; it is large enough to
    interpolate the rankings. It is trained twice, full batch with Adam:

    * ``"log-sigmoid"``: the fixed ``U(x) = log σ(x)`` for every prompt;
    * ``"prompt-aware"``: ``U(x) = x`` for closed-ended and ``U(x) = −1/x`` for open-ended prompts.

    Returns, per utility, the rewards of every prompt's completions from most to least preferred
    (``{"open": (n_prompts, n_completions), "closed": ...}`` tensors), and ``"separation"``: the
    1-D Wasserstein distance between the pooled open and pooled closed rewards. With the fixed
    utility both types converge to the same prompt-independent profile (for 8 completions about
    ``[1, 1, 1, .76, .24, 0, 0, 0]``), so the separation is near 0: collapse. The prompt-aware
    utility polarises closed-ended rewards towards {0, 1} and spreads open-ended ones evenly.
    """
    gen = torch.Generator().manual_seed(seed)
    n_total = 2 * n_prompts
    quality = torch.randn(n_total, n_completions, generator=gen)  # latent quality: sets the ranking
    features = torch.cat([quality[..., None], torch.randn(n_total, n_completions, 3, generator=gen)], -1)
    ranked = quality.argsort(dim=1, descending=True)  # (prompt, rank) completion index
    closed = torch.arange(n_total) >= n_prompts  # the second half of the prompts is closed-ended
    w_rank, l_rank = torch.triu_indices(n_completions, n_completions, offset=1)  # rank i beats rank j > i
    kinds = ["closed" if c else "open" for c in closed.repeat_interleave(len(w_rank)).tolist()]
    prompt_aware = PromptAware(lambda kind: Power(1.0) if kind == "closed" else NegPower(1.0))

    def train(utility: Any) -> torch.Tensor:
        torch.manual_seed(seed)
        embed = torch.nn.Embedding(n_total, 8)
        mlp = torch.nn.Sequential(torch.nn.Linear(8 + features.shape[-1], hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1))
        optimizer = torch.optim.Adam([*embed.parameters(), *mlp.parameters()], lr=lr)

        def scores() -> torch.Tensor:  # (prompt, rank) raw scores
            inputs = torch.cat([embed.weight[:, None].expand(-1, n_completions, -1), features], -1)
            return mlp(inputs).squeeze(-1).gather(1, ranked)

        for _ in range(steps):
            s = scores()
            loss = preference_loss(s[:, w_rank].flatten(), s[:, l_rank].flatten(), utility, kinds)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            return torch.sigmoid(scores())  # (prompt, rank) rewards in [0, 1]

    out: dict[str, Any] = {"separation": {}}
    for name, utility in (("log-sigmoid", LogSigmoid(1.0, bounded=True)), ("prompt-aware", prompt_aware)):
        rewards = train(utility)
        out[name] = {"open": rewards[~closed], "closed": rewards[closed]}
        out["separation"][name] = _wasserstein_1d(rewards[~closed], rewards[closed])
    return out


# ---------------------------------------------------------------------------------------------
# CLI: tokengym rm train
# ---------------------------------------------------------------------------------------------


def add_cli(subparsers: Any) -> None:
    """Register ``rm train`` on an ``argparse`` sub-parsers object (sets ``func``)."""
    rm = subparsers.add_parser("rm", help="reward models")
    rm_sub = rm.add_subparsers(dest="rm_command", required=True)
    train = rm_sub.add_parser("train", help="train a reward model on preference pairs")
    source = train.add_mutually_exclusive_group(required=True)
    source.add_argument("--pairs", metavar="FILE.jsonl", help="preference pairs: prompt/chosen/rejected per line")
    source.add_argument("--synthetic", metavar="N", type=int,
                        help="N synthetic pairs: template sentences ranked by VADER sentiment")
    train.add_argument("--base", default="embedded", help="causal LM to start from (default: embedded)")
    train.add_argument("--out", required=True, metavar="DIR", help="where to save the reward model")
    train.add_argument("--utility", default="log-sigmoid", help=f"one of {', '.join(UTILITY_NAMES)}")
    train.add_argument("--epochs", type=int, default=1)
    train.add_argument("--lr", type=float, default=5e-5)
    train.add_argument("--batch-size", type=int, default=16)
    train.add_argument("--margin", type=float, default=0.0)
    train.add_argument("--center-coef", type=float, default=0.0)
    train.add_argument("--val-fraction", type=float, default=0.1)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--device", default="cpu")
    train.set_defaults(func=_cli_train)


def _cli_train(args: Any) -> int:
    if args.pairs:
        pairs = load_pairs_jsonl(args.pairs)
    else:
        pairs = synthetic_pairs(sentiment_sentence, VaderSentiment(), args.synthetic, min_gap=0.5, seed=args.seed)
    metrics = train_reward_model(
        pairs, args.base, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, utility=args.utility,
        margin=args.margin, center_coef=args.center_coef, val_fraction=args.val_fraction, seed=args.seed,
        out_dir=args.out, device=args.device,
    )
    metrics.pop("model")
    print(json.dumps(metrics, indent=2))
    return 0
