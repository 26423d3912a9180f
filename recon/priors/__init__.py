"""Generative priors for the prior stage: a per-scene repair model, a pretrained pipeline, and pseudo cameras."""
