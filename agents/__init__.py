"""tokengym.agents."""
