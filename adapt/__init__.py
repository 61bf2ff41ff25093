"""Stage 2 and training-free adaptation: pseudo pairs, geometric verification, embedding post-processing."""
