"""Train the embedded default model: a byte-level BPE tokenizer and a small GPT-2 causal LM.

The corpus is offline text that Debian ships: the ``fortunes`` / ``fortunes-min`` quotation files
(under ``/usr/share/games/fortunes``) and the example sentences in the ``wordnet-base`` glosses
(``/usr/share/wordnet/data.*``). ``pretrain`` cleans the text, holds out ~2% of the documents,
trains the tokenizer and the model, measures held-out perplexity, and writes both in Hugging Face
format (``save_pretrained``, safetensors, fp32) so that plain ``transformers`` loads them::

    python tools/pretrain.py                         # rebuilds lm/embedded_model/ with the defaults
    python tools/pretrain.py --quick --out /tmp/tiny_lm

Writes are atomic (:func:`tokengym.lm.io.atomic_write_dir`). A build script outside the installed
package: one pipeline, top to bottom: corpus cleaning, tokenizer, model, training loop,
evaluation, command line. ``tools/test_pretrain.py`` tests it.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from tokengym.lm.loading import EMBEDDED_MODEL_DIR
from tokengym.lm.io import atomic_write_dir

EOS_TOKEN = "<|endoftext|>"

FORTUNES_DIR = Path("/usr/share/games/fortunes")
WORDNET_DIR = Path("/usr/share/wordnet")

# Fortune files from Debian's `fortunes` and `fortunes-min` packages. Left out on purpose:
# ascii-art (pictures), perl (code), translate-me (not English).
_FORTUNE_FILES = (
    "art", "computers", "cookie", "debian", "definitions", "disclaimer", "drugs", "education",
    "ethnic", "food", "fortunes", "goedel", "humorists", "kids", "knghtbrd", "law", "linux",
    "linuxcookie", "literature", "love", "magic", "medicine", "men-women", "miscellaneous", "news",
    "paradoxum", "people", "pets", "platitudes", "politics", "pratchett", "riddles", "science",
    "songs-poems", "sports", "startrek", "tao", "wisdom", "work", "zippy",
)
_WORDNET_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")
DEBIAN_PACKAGES = ("fortunes", "fortunes-min", "wordnet-base")

# Defaults for the shipped model, and the tiny sizes of quick mode (CI).
DEFAULTS: dict[str, Any] = dict(
    vocab_size=4096, n_layer=4, n_embd=256, n_head=4, n_positions=256,
    seq_len=256, batch_size=16, steps=800, lr=2e-3,
)
QUICK: dict[str, Any] = dict(
    vocab_size=512, n_layer=2, n_embd=64, n_head=2, n_positions=64,
    seq_len=64, batch_size=8, steps=40, lr=3e-3,
)
HELDOUT_FRACTION = 0.02
SAMPLE_PROMPTS = ("The movie was", "I think that", "She said", "The food at this restaurant", "Life is")


class CorpusNotFoundError(FileNotFoundError):
    """The pretraining corpus files are missing."""


# --------------------------------------------------------------------------------------------
# Corpus
# --------------------------------------------------------------------------------------------


def default_corpus_files() -> list[Path]:
    """The Debian text files the embedded model is trained on (they may not be installed)."""
    return [FORTUNES_DIR / name for name in _FORTUNE_FILES] + [WORDNET_DIR / n for n in _WORDNET_FILES]


_OVERSTRIKE = re.compile(r"[^\n]\x08")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_SPACES = re.compile(r"[ \t\f\v\r]+")
_SYMBOL_RUN = re.compile(r"([^\w\s])\1{4,}")  # "=====", "-----", "*****": banners and art


def _clean_document(text: str, *, max_chars: int = 1500, max_line_chars: int = 200) -> str | None:
    """Unwrap one document; ``None`` when it looks like ASCII art, code, or is too long/short."""
    text = _OVERSTRIKE.sub("", text.replace("\r\n", "\n"))
    text = _CONTROL.sub("", text.expandtabs(8))
    lines = text.split("\n")
    if any(len(line) > max_line_chars for line in lines):
        return None
    if any(_SYMBOL_RUN.search(line) for line in lines):
        return None
    visible = [c for c in text if not c.isspace()]
    if not visible:
        return None
    letters = sum(c.isalpha() for c in visible)
    if letters / len(visible) < 0.75:
        return None
    # Lines that start with lots of indentation inside a block are likely art or code.
    indented = sum(1 for line in lines if line.strip() and len(line) - len(line.lstrip()) >= 4
                   and not line.strip().startswith("--"))
    if indented > 2 and indented > len([l for l in lines if l.strip()]) // 2:
        return None
    # Unwrap: hard-wrapped lines join with spaces; blank lines and "-- author" lines break.
    paragraphs: list[str] = []
    current: list[str] = []
    for line in lines:
        stripped = _SPACES.sub(" ", line).strip()
        if not stripped or stripped.startswith("--"):
            if current:
                paragraphs.append(" ".join(current))
                current = []
            if stripped:
                paragraphs.append(stripped)
            continue
        current.append(stripped)
    if current:
        paragraphs.append(" ".join(current))
    doc = "\n".join(paragraphs).strip()
    if len(doc) < 12 or len(doc) > max_chars:
        return None
    return doc


def _sentence(example: str) -> str:
    example = _SPACES.sub(" ", example).strip()
    if not example:
        return ""
    example = example[0].upper() + example[1:]
    if example[-1] not in ".!?":
        example += "."
    return example


def _wordnet_documents(text: str) -> list[str]:
    """WordNet ``data.*``: each synset's quoted usage examples become one document."""
    docs = []
    for line in text.split("\n"):
        if not line or line.startswith("  ") or " | " not in line:
            continue  # license header lines start with two spaces
        gloss = line.split(" | ", 1)[1]
        examples = [_sentence(e) for e in re.findall(r'"([^"]+)"', gloss)]
        examples = [e for e in examples if len(e.split()) >= 3]
        if examples:
            docs.append(" ".join(examples))
    return docs


def read_documents(path: str | os.PathLike) -> list[str]:
    """Raw documents of one corpus file.

    WordNet ``data.*`` files give their usage examples; files with ``%`` separator lines (fortune
    files) split on them; other text splits on blank lines, or per line if it has none.
    """
    path = Path(path)
    text = path.read_bytes().decode("utf-8", errors="replace")
    if path.name in _WORDNET_FILES or text.startswith("  1 This software and database"):
        return _wordnet_documents(text)
    text = text.replace("\r\n", "\n")
    if re.search(r"^%\s*$", text, flags=re.M):
        return re.split(r"^%\s*$", text, flags=re.M)
    if re.search(r"\n\s*\n", text.strip()):
        return re.split(r"\n\s*\n", text)
    return text.split("\n")


def load_corpus(files: Iterable[str | os.PathLike]) -> list[str]:
    """Cleaned, de-duplicated documents from ``files``, in file order."""
    seen: set[str] = set()
    docs: list[str] = []
    for f in files:
        for raw in read_documents(f):
            doc = _clean_document(raw)
            if doc is not None and doc not in seen:
                seen.add(doc)
                docs.append(doc)
    return docs


def _resolve_corpus(corpus_files: Sequence[str | os.PathLike] | None) -> list[Path]:
    if corpus_files is None:
        files = [Path(f) for f in default_corpus_files()]
        missing = [str(f) for f in files if not f.is_file()]
        if not files or missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise CorpusNotFoundError(
                f"the default pretraining corpus is missing ({shown or 'no files'}). It comes from the "
                f"Debian packages {', '.join(DEBIAN_PACKAGES)}: install them with "
                f"`apt-get install {' '.join(DEBIAN_PACKAGES)}`, or pass your own text files "
                "(corpus_files=[...] / --corpus FILE ...)."
            )
        return files
    files = [Path(f) for f in corpus_files]
    missing = [str(f) for f in files if not f.is_file()]
    if not files or missing:
        raise FileNotFoundError(f"corpus files not found: {missing or 'none given'}")
    return files


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------


def train_tokenizer(docs: Sequence[str], vocab_size: int, *, model_max_length: int):
    """A GPT-2 style byte-level BPE, wrapped as a ``PreTrainedTokenizerFast``.

    ``<|endoftext|>`` is id 0 and serves as eos, bos, pad and unk.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 257:
        raise ValueError("vocab_size must be at least 257 (256 bytes + <|endoftext|>)")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(docs, trainer=trainer, length=len(docs))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
    )


def _token_stream(tokenizer, docs: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """``eos d1 eos d2 eos ...`` as one id tensor, plus the index where each document starts."""
    eos = tokenizer.eos_token_id
    ids: list[int] = [eos]
    starts: list[int] = []
    # The backend tokenizer directly: no "longer than model_max_length" warning for long documents.
    for enc in tokenizer.backend_tokenizer.encode_batch(list(docs), add_special_tokens=False):
        starts.append(len(ids))
        ids.extend(enc.ids)
        ids.append(eos)
    return torch.tensor(ids, dtype=torch.long), torch.tensor(starts, dtype=torch.long)


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


def build_model(vocab_size: int, eos_id: int, *, n_layer: int, n_embd: int, n_head: int, n_positions: int,
                dropout: float = 0.0):
    from transformers import GPT2Config, GPT2LMHeadModel

    if n_embd % n_head:
        raise ValueError(f"n_embd ({n_embd}) must be divisible by n_head ({n_head})")
    config = GPT2Config(
        vocab_size=vocab_size, n_positions=n_positions, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
        resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
        bos_token_id=eos_id, eos_token_id=eos_id, pad_token_id=eos_id,
        tie_word_embeddings=True,
    )
    return GPT2LMHeadModel(config).float()


@torch.no_grad()
def evaluate_perplexity(model, stream: torch.Tensor, seq_len: int, batch_size: int = 16) -> float:
    """Token-level perplexity of ``stream`` scored in consecutive windows of ``seq_len`` tokens."""
    was_training = model.training
    model.eval()
    windows = [stream[i:i + seq_len] for i in range(0, len(stream) - 1, seq_len)]
    windows = [w for w in windows if len(w) > 1]
    total_nll, total_n = 0.0, 0
    for b in range(0, len(windows), batch_size):
        chunk = windows[b:b + batch_size]
        width = max(len(w) for w in chunk)
        ids = torch.zeros(len(chunk), width, dtype=torch.long)
        mask = torch.zeros(len(chunk), width, dtype=torch.long)
        for i, w in enumerate(chunk):
            ids[i, :len(w)] = w
            mask[i, :len(w)] = 1
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        targets = ids[:, 1:]
        valid = mask[:, 1:].bool()
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
        total_nll += float(nll[valid].sum())
        total_n += int(valid.sum())
    model.train(was_training)
    return math.exp(total_nll / max(total_n, 1))


def _lr_at(step: int, *, steps: int, warmup: int, lr: float, min_ratio: float = 0.1) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def _batch(stream: torch.Tensor, starts: torch.Tensor, batch_size: int, seq_len: int,
           gen: torch.Generator) -> torch.Tensor:
    """Random windows of ``seq_len + 1`` tokens; half start at a document start."""
    hi = len(stream) - seq_len - 1
    offsets = torch.randint(0, hi + 1, (batch_size,), generator=gen)
    n_doc = batch_size // 2
    if n_doc and len(starts):
        pick = starts[torch.randint(0, len(starts), (n_doc,), generator=gen)].clamp(max=hi)
        offsets[:n_doc] = pick
    idx = offsets[:, None] + torch.arange(seq_len + 1)[None, :]
    return stream[idx]


@torch.no_grad()
def sample_continuations(model, tokenizer, prompts: Sequence[str] = SAMPLE_PROMPTS, *, max_new_tokens: int = 30,
                         top_k: int = 50, temperature: float = 0.8, seed: int = 0) -> list[str]:
    """Sampled continuations (top-k, temperature) of each prompt; stops at eos."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    eos = tokenizer.eos_token_id
    outs = []
    for prompt in prompts:
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        x = torch.tensor([ids])
        new: list[int] = []
        limit = model.config.n_positions
        for _ in range(max_new_tokens):
            logits = model(input_ids=x[:, -limit:]).logits[0, -1].float() / temperature
            if top_k:
                kth = torch.topk(logits, min(top_k, logits.numel())).values[-1]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            nxt = int(torch.multinomial(torch.softmax(logits, -1), 1, generator=gen))
            if nxt == eos:
                break
            new.append(nxt)
            x = torch.cat([x, torch.tensor([[nxt]])], dim=1)
        outs.append(prompt + tokenizer.decode(new))
    return outs


@torch.no_grad()
def kv_cache_tokens_per_second(model, *, batch_size: int = 32, prompt_len: int = 16, new_tokens: int = 64,
                               seed: int = 0) -> float:
    """Generated tokens per second (all rows) when stepping one token per call with a KV cache."""
    from transformers import DynamicCache

    from tokengym.lm.cached_lm import cache_keyword

    model.eval()
    key = cache_keyword(model)  # `cache` from transformers 5.24, `past_key_values` before
    gen = torch.Generator().manual_seed(seed)
    V = model.get_output_embeddings().weight.shape[0]
    ids = torch.randint(1, V, (batch_size, prompt_len), generator=gen)  # no eos/pad in the prompt
    cache = DynamicCache()
    pos = torch.arange(prompt_len)[None].expand(batch_size, -1)
    out = model(input_ids=ids, position_ids=pos, use_cache=True, **{key: cache})
    t0 = time.perf_counter()
    for t in range(new_tokens):
        nxt = torch.multinomial(torch.softmax(out.logits[:, -1].float(), -1), 1, generator=gen)
        pos = torch.full((batch_size, 1), prompt_len + t)
        out = model(input_ids=nxt, position_ids=pos, use_cache=True, **{key: out[key]})
    return batch_size * new_tokens / (time.perf_counter() - t0)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _set_default_permissions(directory: Path) -> None:
    """mkdtemp makes 0700 dirs (and safetensors 0600 files); give them the usual umask modes."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(directory, 0o777 & ~umask)
    for f in directory.rglob("*"):
        os.chmod(f, (0o777 if f.is_dir() else 0o666) & ~umask)


def pretrain(
    out_dir: str | os.PathLike = EMBEDDED_MODEL_DIR,
    corpus_files: Sequence[str | os.PathLike] | None = None,
    *,
    vocab_size: int | None = None,
    n_layer: int | None = None,
    n_embd: int | None = None,
    n_head: int | None = None,
    n_positions: int | None = None,
    seq_len: int | None = None,
    batch_size: int | None = None,
    steps: int | None = None,
    lr: float | None = None,
    warmup: int | None = None,
    weight_decay: float = 0.1,
    dropout: float = 0.0,
    seed: int = 0,
    quick: bool = False,
    progress: bool = True,
    num_threads: int | None = None,
    eval_batches: int | None = None,
) -> dict[str, Any]:
    """Train the tokenizer and a GPT-2 causal LM on ``corpus_files`` and save both to ``out_dir``.

    Sizes left as ``None`` take :data:`DEFAULTS` (or :data:`QUICK` when ``quick=True``: tiny
    sizes, a few dozen steps, seconds on CPU). ``corpus_files=None`` uses
    :func:`default_corpus_files` and raises :class:`CorpusNotFoundError` naming the Debian
    packages when they are missing. Returns metrics: loss at the start and end of training,
    held-out perplexity, parameter count, bytes on disk, and the settings used. ``dropout`` is
    used while training only; the saved config has dropout 0 so train/eval log-probs agree.
    """
    base = QUICK if quick else DEFAULTS
    given = dict(vocab_size=vocab_size, n_layer=n_layer, n_embd=n_embd, n_head=n_head,
                 n_positions=n_positions, seq_len=seq_len, batch_size=batch_size, steps=steps, lr=lr)
    cfg = {k: (base[k] if v is None else v) for k, v in given.items()}
    if seq_len is None:
        cfg["seq_len"] = min(base["seq_len"], cfg["n_positions"])
    if cfg["seq_len"] > cfg["n_positions"]:
        raise ValueError(f"seq_len ({cfg['seq_len']}) exceeds n_positions ({cfg['n_positions']})")
    if cfg["steps"] < 1:
        raise ValueError("steps must be >= 1")
    cfg["warmup"] = warmup if warmup is not None else max(1, min(100, cfg["steps"] // 10))

    files = _resolve_corpus(corpus_files)
    out_dir = Path(out_dir).resolve()
    if num_threads:
        torch.set_num_threads(num_threads)
    torch.manual_seed(seed)
    t_start = time.perf_counter()

    docs = load_corpus(files)
    if len(docs) < 2:
        raise ValueError(f"the corpus gave {len(docs)} usable documents; need at least 2")
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    n_held = max(1, round(HELDOUT_FRACTION * len(docs)))
    held_docs = [docs[i] for i in order[:n_held]]
    train_docs = [docs[i] for i in order[n_held:]]

    tokenizer = train_tokenizer(train_docs, cfg["vocab_size"], model_max_length=cfg["n_positions"])
    train_stream, train_starts = _token_stream(tokenizer, train_docs)
    held_stream, _ = _token_stream(tokenizer, held_docs)
    S = cfg["seq_len"]
    if len(train_stream) < S + 2:
        raise ValueError(f"the corpus has {len(train_stream)} tokens, fewer than seq_len + 2 = {S + 2}")

    V = len(tokenizer)
    eos = tokenizer.eos_token_id
    model = build_model(V, eos, n_layer=cfg["n_layer"], n_embd=cfg["n_embd"], n_head=cfg["n_head"],
                        n_positions=cfg["n_positions"], dropout=dropout)
    n_params = sum(p.numel() for p in model.parameters())

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg["lr"], betas=(0.9, 0.95), eps=1e-8,
    )
    gen = torch.Generator().manual_seed(seed)

    from tqdm.auto import tqdm

    losses: list[float] = []
    model.train()
    bar = tqdm(range(cfg["steps"]), desc="pretrain", disable=not progress, dynamic_ncols=True)
    ema = None
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, steps=cfg["steps"], warmup=cfg["warmup"], lr=cfg["lr"])
        batch = _batch(train_stream, train_starts, cfg["batch_size"], S, gen)
        x = batch[:, :-1]
        logits = model(input_ids=x, attention_mask=torch.ones_like(x)).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        value = float(loss.detach())
        losses.append(value)
        ema = value if ema is None else 0.95 * ema + 0.05 * value
        bar.set_postfix(loss=f"{ema:.3f}", lr=f"{opt.param_groups[0]['lr']:.2e}")
    bar.close()
    train_seconds = time.perf_counter() - t_start

    model.eval()
    held = held_stream
    if eval_batches is not None:
        held = held[: eval_batches * 16 * S + 1]
    heldout_ppl = evaluate_perplexity(model, held, S)

    # Saved config: no dropout, so a policy put in train mode scores exactly as in eval mode.
    for attr in ("resid_pdrop", "embd_pdrop", "attn_pdrop"):
        setattr(model.config, attr, 0.0)
    model.generation_config.bos_token_id = eos
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = eos

    k = max(1, min(10, len(losses) // 10))
    metrics: dict[str, Any] = {
        "loss_start": sum(losses[:k]) / k,
        "loss_end": sum(losses[-k:]) / k,
        "loss_first_step": losses[0],
        "loss_last_step": losses[-1],
        "heldout_perplexity": heldout_ppl,
        "heldout_tokens": int(len(held)),
        "uniform_perplexity": float(V),
        "n_params": int(n_params),
        "vocab_size": int(V),
        "n_documents": len(docs),
        "n_heldout_documents": len(held_docs),
        "train_tokens": int(len(train_stream)),
        "tokens_seen": int(cfg["steps"] * cfg["batch_size"] * S),
        "train_seconds": round(train_seconds, 1),
        "seed": seed,
        "quick": quick,
        "corpus_files": [str(f) for f in files],
        **{k2: v for k2, v in cfg.items() if k2 != "vocab_size"},
    }

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        # Name the generic fast class so that transformers 4.x loads the tokenizer as well as 5.x.
        tc_path = tmp / "tokenizer_config.json"
        tc = json.loads(tc_path.read_text())
        tc["tokenizer_class"] = "PreTrainedTokenizerFast"
        tc_path.write_text(json.dumps(tc, indent=2) + "\n")
        info = {k2: v for k2, v in metrics.items() if k2 != "corpus_files"}
        info["corpus_files"] = [f.name if str(f).startswith(("/usr/share/games", "/usr/share/wordnet")) else str(f)
                                for f in files]
        (tmp / "training_info.json").write_text(json.dumps(info, indent=2) + "\n")
        metrics["bytes_on_disk"] = _dir_bytes(tmp)
        _set_default_permissions(tmp)

    atomic_write_dir(out_dir, write)
    metrics["out_dir"] = str(out_dir)
    return metrics


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=EMBEDDED_MODEL_DIR,
                        help="output directory (default: the embedded model dir, %(default)s)")
    parser.add_argument("--corpus", nargs="+", type=Path, default=None, metavar="FILE",
                        help="text files to train on (default: the Debian fortunes + wordnet-base files)")
    parser.add_argument("--steps", type=int, default=None, help=f"optimizer steps (default {DEFAULTS['steps']})")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and a few dozen steps (seconds; for CI)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vocab-size", type=int, default=None)
    parser.add_argument("--n-layer", type=int, default=None)
    parser.add_argument("--n-embd", type=int, default=None)
    parser.add_argument("--n-head", type=int, default=None)
    parser.add_argument("--n-positions", type=int, default=None)
    parser.add_argument("--seq-len", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads before training")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--samples", action="store_true", help="print sample continuations after training")


def run_cli(args: argparse.Namespace) -> int:
    metrics = pretrain(
        args.out, args.corpus,
        vocab_size=args.vocab_size, n_layer=args.n_layer, n_embd=args.n_embd, n_head=args.n_head,
        n_positions=args.n_positions, seq_len=args.seq_len, batch_size=args.batch_size,
        steps=args.steps, lr=args.lr, seed=args.seed, quick=args.quick,
        progress=not args.no_progress, num_threads=args.threads,
    )
    print(json.dumps(metrics, indent=2))
    if args.samples:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(args.out, local_files_only=True)
        tok = AutoTokenizer.from_pretrained(args.out, local_files_only=True)
        for text in sample_continuations(model, tok, seed=args.seed):
            print(repr(text))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/pretrain.py",
                                     description=__doc__.split("\n\n")[0])
    _add_arguments(parser)
    return run_cli(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
