"""tokengym.rewards."""
