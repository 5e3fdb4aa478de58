"""tokengym: Gymnasium-native token-level MDPs for RL on language models."""
from tokengym.envs.loading import EMBEDDED_MODEL_DIR

__version__ = "0.1.0"
__all__ = ["EMBEDDED_MODEL_DIR", "__version__"]
