"""The shared training loop, checkpoints and plots."""

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .loop import FitConfig, TrainingDiverged, fit
from .plot import plot_history

__all__ = [
    "CheckpointError",
    "FitConfig",
    "TrainingDiverged",
    "fit",
    "load_checkpoint",
    "plot_history",
    "save_checkpoint",
]
