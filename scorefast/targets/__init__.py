"""Targets for samplers: Gaussian mixtures (exact samples, log-density, score, noised score)
and energy-based targets, with presets for common tests."""

from .energy import EnergyTarget
from .mixture import GaussianMixture
from .presets import PRESETS, anisotropic_2d, double_well, grid, random_mixture, ring, two_mode_2d

__all__ = [
    "EnergyTarget",
    "GaussianMixture",
    "PRESETS",
    "anisotropic_2d",
    "double_well",
    "grid",
    "random_mixture",
    "ring",
    "two_mode_2d",
]
