"""tokengym.benchmarks."""
