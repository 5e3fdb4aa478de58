"""tokengym.envs."""
