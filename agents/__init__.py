"""tokengym.agents: the KV-cache policy, rollout storage and advantages, one file per agent."""
from tokengym.agents.a2c import A2C, A2CConfig
from tokengym.agents.base import Agent, AgentConfig
from tokengym.agents.rollout import Rollout
from tokengym.agents.dpo import DPO, DPOConfig
from tokengym.agents.fdpg import FDPG, FDPGConfig
from tokengym.agents.grpo import GRPO, GRPOConfig
from tokengym.agents.policy import Policy
from tokengym.lm.sampling import SamplingConfig
from tokengym.agents.ppo import PPO, PPOConfig
from tokengym.agents.reinforce import REINFORCE, REINFORCEConfig

AGENTS = {"reinforce": REINFORCE, "a2c": A2C, "ppo": PPO, "grpo": GRPO, "fdpg": FDPG, "dpo": DPO}
"""CLI names of the agents."""

__all__ = [
    "A2C", "A2CConfig", "AGENTS", "Agent", "AgentConfig", "DPO", "DPOConfig", "FDPG", "FDPGConfig", "GRPO", "GRPOConfig",
    "PPO", "PPOConfig", "Policy", "REINFORCE", "REINFORCEConfig", "Rollout", "SamplingConfig",
]
