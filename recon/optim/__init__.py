"""Optimisation helpers: losses and sparse-view regularisers shared by the optimize and prior stages."""
