"""Synthetic scenes with exact ground truth (recon data synth)."""
