"""tokengym: Gymnasium-native token-level MDPs for training language models with RL.

``import tokengym`` registers every env under the ``tokengym/`` namespace::

    import gymnasium as gym, tokengym
    env = gym.make("tokengym/Sentiment-v0")
    envs = gym.make_vec("tokengym/Sentiment-v0", num_envs=16, device="cpu")
"""
from tokengym.envs import (
    EMBEDDED_MODEL_DIR, TokenEnv, TokenVectorEnv, load_causal_lm, load_tokenizer, registered_envs,
)

__version__ = "0.1.0"
__all__ = [
    "EMBEDDED_MODEL_DIR", "TokenEnv", "TokenVectorEnv", "__version__", "load_causal_lm",
    "load_tokenizer", "registered_envs",
]
