"""tokengym.lm: the leaf layer. It imports nothing else from tokengym, so every other package may
import it: atomic writes (:mod:`tokengym.lm.io`) and the shared matplotlib setup
(:mod:`tokengym.lm.plotting`)."""
