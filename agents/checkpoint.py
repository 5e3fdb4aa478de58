"""An agent's persistence: :func:`save_agent` / :func:`load_agent` (``Agent.save`` / ``Agent.load``),
the resumable trainer state, and a run's periodic checkpoints with resuming from the newest
valid one.

A saved agent (``Agent.save(DIR)``)::

    DIR/policy/                        save_pretrained: transformers (or peft) alone loads it
    DIR/reference/                     π_ref, likewise (a LoRA run's full base model, once)
    DIR/agent_config.json              the agent's class, its config and the policy's autocast dtype
    DIR/trainer_state.pt               optimizer, every RNG, adaptive β, progress, metrics so far
    DIR/optimizer/                     sharded (FSDP) agents: the optimizer's state, in torch.distributed.checkpoint
                                       format (each rank wrote its shards; trainer_state.pt then holds none)

Layout of a run directory ``DIR`` (written by ``tokengym train``)::

    DIR/run.json                       the resolved settings of the run (what --resume re-uses)
    DIR/metrics.jsonl                  one line per iteration
    DIR/checkpoints/iter-000004/       one complete checkpoint per --save-every iterations
        weights.safetensors            every policy parameter and buffer (value head included)
        trainer_state.pt               optimizer, every RNG, adaptive-β, progress, metrics so far
        MANIFEST.json                  written last: run id, iteration, sha256 of each file above
    DIR/checkpoints/iter-000004/       the same under FSDP ("layout": "sharded" in the manifest):
        shards/                        policy weights and optimizer state, torch.distributed.checkpoint
                                       format: each rank writes its own shards, rank 0 the .metadata
        trainer_state.pt, MANIFEST.json

A checkpoint is written into a temporary sibling (``checkpoints/.iter-….tmp-…``) by
:func:`tokengym.lm.io.atomic_write_dir`, which fsyncs every file and renames it into place; the
manifest is written last. A checkpoint whose manifest is missing, unreadable, from another run, or whose
files do not match their sha256 is reported and skipped, never loaded half-way.

Under FSDP (``Agent(..., sharding=)``, ``tokengym train --fsdp``) every rank calls
:func:`save_agent` and :func:`write_checkpoint`: each writes its shards into the one temporary
directory rank 0 made, so no rank ever holds the whole optimizer state; the final ``policy/`` and
``reference/`` are gathered to rank 0 on the CPU and written as full ``save_pretrained`` directories.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import torch

from tokengym.agents.policy import Policy
from tokengym.lm.distributed import broadcast_object, world
from tokengym.lm.fsdp import full_state_dict
from tokengym.lm.io import atomic_write_dir
from tokengym.lm.reference import Reference
from tokengym.rewards.base import walk

__all__ = [
    "CHECKPOINTS", "MANIFEST", "save_agent", "load_agent", "trainer_state", "restore_trainer_state",
    "write_checkpoint", "list_checkpoints", "check_checkpoint", "newest_valid", "restore",
]

CHECKPOINTS = "checkpoints"
MANIFEST = "MANIFEST.json"
WEIGHTS = "weights.safetensors"
STATE = "trainer_state.pt"
CONFIG_FILE = "agent_config.json"
SHARDS = "shards"
OPTIMIZER = "optimizer"
FORMAT = 1


# ------------------------------------------------------------------------------ a saved agent
def save_agent(agent, directory: str | os.PathLike, keep: tuple[str, ...] = ()) -> Path:
    """Write ``policy/`` and ``reference/`` (``save_pretrained``: transformers alone loads them,
    each with the env's tokenizer and a generation config; with LoRA ``policy/`` is a PEFT
    adapter directory and ``reference/`` its full base model, once), the config, and the trainer
    state. Atomic: everything is written to a temporary sibling and renamed into place; files named
    in ``keep`` that already exist in ``directory`` (a run's metrics, say) are carried over.
    A sharded agent's every rank calls it (see the module docstring)."""
    policy, sharded = agent.policy, agent.sharded
    writer = world()[0] == 0

    def write(tmp: Path) -> None:
        states = {}
        if sharded:  # one model at a time on rank 0's CPU
            states = {"model_state": full_state_dict(policy.model)}
            if policy.value_model is not None:
                states["value_model_state"] = full_state_dict(policy.value_model)
        if writer:
            policy.save_pretrained(tmp / "policy", **states)
        del states
        reference_state = full_state_dict(agent.reference.model) if sharded else None
        if writer:
            agent.reference.save_pretrained(tmp / "reference", tokenizer=agent.env.tokenizer, state_dict=reference_state)
        del reference_state
        if sharded:
            _save_shards(_sharded_state(agent, ("optimizer",)), tmp / OPTIMIZER)
        if not writer:
            return
        dtype = policy.autocast_dtype
        (tmp / CONFIG_FILE).write_text(json.dumps({
            "agent": type(agent).__name__, **asdict(agent.config),
            "autocast_dtype": None if dtype is None else str(dtype).removeprefix("torch."),
        }, indent=2))
        torch.save(trainer_state(agent), tmp / STATE)

    return _write_dir(directory, write, keep=keep, every_rank=sharded)


def load_agent(cls, directory: str | os.PathLike, env, sharding=None):
    """Resume an agent of class ``cls`` saved by :func:`save_agent` on ``env`` (same task and batch
    size), with the policy's autocast dtype as it was saved. An agent saved sharded resumes sharded
    (``sharding=``, on any number of ranks: the optimizer's shards are re-cut on loading)."""
    directory = Path(directory)
    saved = json.loads((directory / CONFIG_FILE).read_text())
    if saved.pop("agent") != cls.__name__:
        raise ValueError(f"{directory} holds a different agent; load it with its own class")
    names = {f.name for f in fields(cls.config_class)}
    config = cls.config_class(**{k: v for k, v in saved.items() if k in names})
    env = getattr(env, "unwrapped", env)
    lora = (directory / "policy" / "adapter_config.json").is_file()  # adapters on reference/'s base
    dtype = saved.get("autocast_dtype")  # absent in checkpoints from before it was recorded: float32
    policy = Policy.from_pretrained(
        directory / "policy", device=env.device, base_model=directory / "reference" if lora else None,
        autocast_dtype=None if dtype is None else getattr(torch, dtype),
    )
    if not lora:  # a LoRA policy's π_ref is its base, adapters off (set in Agent.__init__)
        env.set_reference(Reference.load(directory / "reference", temperature=env.sampling.temperature, device=env.device))
    saved_sharded = (directory / OPTIMIZER).is_dir()
    if saved_sharded != (sharding is not None):
        raise ValueError(f"{directory} was saved {'sharded' if saved_sharded else 'unsharded'}: load it "
                         f"{'with' if saved_sharded else 'without'} sharding=")
    agent = cls(env, config, policy=policy, sharding=sharding)
    if saved_sharded:
        _load_shards(agent, directory / OPTIMIZER, ("optimizer",))
    restore_trainer_state(agent, torch.load(directory / STATE, map_location=env.device, weights_only=True))
    return agent


# ------------------------------------------------------------------------------ sharded state
def _sharded_state(agent, parts: tuple[str, ...] = ("model", "optimizer")) -> dict:
    """``parts`` of a sharded agent's state: the policy's (``"model"``) and the optimizer's state
    dicts, each rank's shards only (``DTensor``s keyed by parameter name)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    getters = {"model": lambda: get_model_state_dict(agent.policy),
               "optimizer": lambda: get_optimizer_state_dict(agent.policy, agent.optimizer)}
    return {part: getters[part]() for part in parts}


def _save_shards(state: dict, directory: Path) -> None:
    """Every rank writes its shards of ``state`` into ``directory`` (rank 0 also the ``.metadata``)."""
    import torch.distributed.checkpoint as dcp

    dcp.save(state, checkpoint_id=directory)


def _load_shards(agent, directory: Path, parts: tuple[str, ...]) -> None:
    """Read ``parts`` (``"model"``, ``"optimizer"``) of a sharded agent's state from ``directory``;
    each rank reads the shards it holds."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    state = _sharded_state(agent, parts)
    dcp.load(state, checkpoint_id=directory)
    if "model" in state:
        set_model_state_dict(agent.policy, state["model"])
    if "optimizer" in state:
        set_optimizer_state_dict(agent.policy, agent.optimizer, state["optimizer"])


def _write_dir(path: str | os.PathLike, write, keep: tuple[str, ...] = (), every_rank: bool = False) -> Path:
    """:func:`~tokengym.lm.io.atomic_write_dir` by rank 0; with ``every_rank`` every rank runs
    ``write(tmp)`` in the one temporary directory rank 0 made (a shared file system across nodes),
    and rank 0 renames it into place once its own ``write`` returns (the shards' collective save
    returns on rank 0 only after every rank has written)."""
    if not every_rank:
        return atomic_write_dir(path, write, keep=keep)
    if world()[0] == 0:
        return atomic_write_dir(path, lambda tmp: write(broadcast_object(tmp.absolute())), keep=keep)
    write(broadcast_object())
    return Path(path)


# ------------------------------------------------------------------------------ trainer state
def trainer_state(agent) -> dict:
    """Everything but the weights that the agent's next iteration depends on: optimizer and loss scaler, every RNG
    (the sampler's generator, torch's, Python's, NumPy's and the env's), the state of every reward
    in the env's reward tree (an adaptive β), progress, metrics so far, which parameters train, and
    the agent's own :meth:`~tokengym.agents.Agent.extra_state`. A sharded agent's optimizer state
    is saved by every rank apart (:func:`_save_shards`), so it is left out here."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        **({} if agent.sharded else {"optimizer": agent.optimizer.state_dict()}),
        "grad_scaler": agent.scaler.state_dict(),  # empty unless float16
        "generator": agent.generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "python_rng": list(random.getstate()[1]),
        "numpy_rng": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "env_rng": agent.env.np_random.bit_generator.state,
        "reward_state": _reward_states(agent.env.reward),
        "iteration": agent.iteration,
        "episodes": agent.episodes,
        "skipped_updates": agent.skipped_updates,
        "consecutive_skipped": agent.consecutive_skipped,
        "history": agent.history,
        "trainable": [name for name, p in agent.policy.named_parameters() if p.requires_grad],
        "extra": agent.extra_state(),
    }
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    return state


def restore_trainer_state(agent, state: dict) -> None:
    """Inverse of :func:`trainer_state` (the weights are restored separately)."""
    trainable = set(state["trainable"])
    names = {name for name, _ in agent.policy.named_parameters()}
    if not trainable <= names:
        raise ValueError(f"the checkpoint trains parameters this policy lacks: {sorted(trainable - names)[:5]}")
    if not trainable:
        raise ValueError("the checkpoint records no trainable parameter: a resumed update would change nothing")
    for name, p in agent.policy.named_parameters():
        p.requires_grad_(name in trainable)
    if "optimizer" in state:  # a sharded agent's is restored from its shards
        agent.optimizer.load_state_dict(state["optimizer"])
    if state.get("grad_scaler"):  # absent before float16 had a scaler, empty when it is off
        agent.scaler.load_state_dict(state["grad_scaler"])
    agent.generator.set_state(state["generator"].cpu())
    torch.set_rng_state(state["torch_rng"].cpu())
    if "cuda_rng" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
    random.setstate((3, tuple(state["python_rng"]), None))
    kind, keys, pos, has_gauss, cached = state["numpy_rng"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    agent.env.np_random = np.random.Generator(np.random.PCG64())
    agent.env.np_random.bit_generator.state = state["env_rng"]
    _restore_reward_states(agent.env.reward, state["reward_state"])
    agent.iteration, agent.episodes = state["iteration"], state["episodes"]
    agent.skipped_updates, agent.history = state["skipped_updates"], state["history"]
    agent.consecutive_skipped = state.get("consecutive_skipped", 0)
    agent.load_extra_state(state["extra"])


def _stateful_rewards(reward) -> list:
    """The rewards in ``reward``'s tree (itself and, recursively, its ``children()``) that hold
    state to checkpoint (an adaptive β), in a fixed depth-first order."""
    return [r for r in walk(reward) if callable(getattr(r, "state_dict", None)) and r.state_dict()]


def _reward_states(reward) -> list[dict]:
    return [r.state_dict() for r in _stateful_rewards(reward)]


def _restore_reward_states(reward, states: list) -> None:
    stateful = _stateful_rewards(reward)
    if len(stateful) != len(states):
        raise ValueError(f"the checkpoint holds the state of {len(states)} rewards (adaptive β), the env's reward has {len(stateful)}")
    for r, state in zip(stateful, states):
        r.load_state_dict(state if isinstance(state, dict) else {"beta": state})  # older checkpoints: bare β values


# ------------------------------------------------------------------------ periodic checkpoints


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_checkpoint(agent, run_dir: str | os.PathLike, run_id: str, keep: int) -> Path:
    """Checkpoint ``agent`` as ``run_dir/checkpoints/iter-NNNNNN``; keep the newest ``keep``. A
    sharded agent's every rank calls it: each writes its shards of the weights and the optimizer."""
    from safetensors.torch import save_model

    root = Path(run_dir) / CHECKPOINTS
    sharded, writer = agent.sharded, world()[0] == 0

    def write(tmp: Path) -> None:
        if sharded:
            _save_shards(_sharded_state(agent), tmp / SHARDS)
        else:
            save_model(agent.policy, str(tmp / WEIGHTS))  # handles tied weights (GPT-2's lm_head)
        if not writer:
            return
        torch.save(trainer_state(agent), tmp / STATE)
        names = [STATE] + ([p.relative_to(tmp).as_posix() for p in sorted((tmp / SHARDS).rglob("*")) if p.is_file()]
                           if sharded else [WEIGHTS])
        manifest = {"format": FORMAT, "run_id": run_id, "iteration": agent.iteration, "agent": type(agent).__name__,
                    "layout": "sharded" if sharded else "full", "files": {name: _sha256(tmp / name) for name in names}}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))

    path = _write_dir(root / f"iter-{agent.iteration:06d}", write, every_rank=sharded)
    if writer:
        for old in list_checkpoints(run_dir)[keep:]:
            shutil.rmtree(old, ignore_errors=True)
    return path


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Checkpoint directories (valid or not), newest first; temporary ones are not listed."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("iter-") and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[5:]), reverse=True)


def remove_partial(run_dir: str | os.PathLike) -> list[Path]:
    """Delete temporary directories a killed writer left behind; returns them."""
    root = Path(run_dir) / CHECKPOINTS
    stale = [p for p in root.glob(".iter-*") if ".tmp-" in p.name or ".old-" in p.name] if root.is_dir() else []
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return stale


def check_checkpoint(path: Path, run_id: str, agent_name: str) -> str | None:
    """``None`` if ``path`` is a complete checkpoint of this run, else the reason it is not."""
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        return "no MANIFEST.json (partial write)"
    except (OSError, ValueError) as exc:
        return f"unreadable MANIFEST.json ({exc})"
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), dict):
        return "MANIFEST.json is not a tokengym checkpoint manifest"
    if manifest.get("run_id") != run_id or manifest.get("agent") != agent_name:
        return f"belongs to another run ({manifest.get('agent')}, run id {manifest.get('run_id')})"
    for name, digest in manifest["files"].items():
        if not (path / name).is_file():
            return f"{name} is missing"
        if _sha256(path / name) != digest:
            return f"{name} does not match its sha256 (corrupted)"
    layout = manifest.get("layout", "full")
    if layout == "full" and set(manifest["files"]) != {WEIGHTS, STATE}:
        return f"MANIFEST.json lists {sorted(manifest['files'])}, expected {[STATE, WEIGHTS]}"
    if layout == "sharded" and not {STATE, f"{SHARDS}/.metadata"} <= set(manifest["files"]):
        return f"MANIFEST.json lists {sorted(manifest['files'])}, expected {STATE} and {SHARDS}/.metadata among them"
    if layout not in ("full", "sharded"):
        return f"MANIFEST.json has layout {layout!r}, expected 'full' or 'sharded'"
    return None


def checkpoint_layout(path: Path) -> str:
    """``"sharded"`` (FSDP shards) or ``"full"``: how a checked checkpoint holds the weights."""
    return json.loads((path / MANIFEST).read_text()).get("layout", "full")


def newest_valid(run_dir, run_id: str, agent_name: str) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest valid checkpoint (or None), and each newer invalid one with its reason."""
    skipped = []
    for path in list_checkpoints(run_dir):
        reason = check_checkpoint(path, run_id, agent_name)
        if reason is None:
            return path, skipped
        skipped.append((path, reason))
    return None, skipped


def restore(agent, path: Path) -> None:
    """Load a checked checkpoint into an agent built with the run's own settings (every rank of a
    sharded agent reads its own shards)."""
    from safetensors.torch import load_model

    if (checkpoint_layout(path) == "sharded") != agent.sharded:
        raise ValueError(f"{path} holds a {checkpoint_layout(path)} checkpoint; the agent is "
                         f"{'sharded' if agent.sharded else 'not sharded'}")
    if agent.sharded:
        _load_shards(agent, path / SHARDS, ("model", "optimizer"))
    else:
        load_model(agent.policy, str(path / WEIGHTS), device=str(agent.env.device))
    state = torch.load(path / STATE, map_location=agent.env.device, weights_only=True)
    restore_trainer_state(agent, state)
