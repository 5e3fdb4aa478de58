"""tokengym: Gymnasium-native token-level MDPs for training language models with RL.

``import tokengym`` registers every env under the ``tokengym/`` namespace and exposes what a user
types::

    import gymnasium as gym, tokengym
    envs = gym.make_vec("tokengym/Sentiment-v0", num_envs=16, reward="kl-shaped")
    agent = tokengym.PPO(envs, tokengym.PPOConfig())
    agent.learn(total_episodes=512)

The layers, lowest first: ``tokengym.lm`` (models, sampling, the reference, KL estimators) ←
``tokengym.rewards`` ← ``tokengym.envs`` ← ``tokengym.agents`` ← ``tokengym.benchmarks``; this
package holds only these re-exports and the command line (docs/architecture.md).
"""
from tokengym.agents import (
    A2C, GRPO, PPO, REINFORCE, A2CConfig, Agent, GRPOConfig, Policy, PPOConfig, REINFORCEConfig,
)
from tokengym.envs import TokenEnv, TokenVectorEnv, registered_envs
from tokengym.lm import EMBEDDED_MODEL_DIR, Reference, SamplingConfig, load_causal_lm, load_tokenizer
from tokengym.rewards import (
    AdaptiveKL, FineGrained, Holistic, KLShaped, WeightedSum, make_reward,
)

__version__ = "0.1.0"
__all__ = [
    "A2C", "A2CConfig", "AdaptiveKL", "Agent", "EMBEDDED_MODEL_DIR", "FineGrained", "GRPO", "GRPOConfig",
    "Holistic", "KLShaped", "PPO", "PPOConfig", "Policy", "REINFORCE", "REINFORCEConfig", "Reference",
    "SamplingConfig", "TokenEnv", "TokenVectorEnv", "WeightedSum", "__version__", "load_causal_lm",
    "load_tokenizer", "make_reward", "registered_envs",
]
