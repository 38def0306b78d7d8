"""Training methods. Each trainer decides only where each block's gradient comes from."""

from .async_dgl import AsyncDGLTrainer
from .backprop import BackpropTrainer
from .base import Trainer
from .dgl import DGLTrainer, GreedyTrainer
from .dni import CDNITrainer, DNITrainer
from .feedback_alignment import DFATrainer, DRTPTrainer, FATrainer, ShallowTrainer, SignDFATrainer
from .forward_forward import FFTrainer
from .forward_gradient import ForwardGradientTrainer
from .lls import LLSMTrainer, LLSMxMTrainer, LLSTrainer, LocalLossesTrainer
from .pepita import PEPITATrainer

TRAINERS = {
    "bp": BackpropTrainer,
    "dni": DNITrainer,
    "cdni": CDNITrainer,
    "greedy": GreedyTrainer,
    "dgl": DGLTrainer,
    "async-dgl": AsyncDGLTrainer,
    "lls": LLSTrainer,
    "lls-m": LLSMTrainer,
    "lls-mxm": LLSMxMTrainer,
    "local-losses": LocalLossesTrainer,
    "fa": FATrainer,
    "dfa": DFATrainer,
    "sdfa": SignDFATrainer,
    "drtp": DRTPTrainer,
    "shallow": ShallowTrainer,
    "ff": FFTrainer,
    "fg": ForwardGradientTrainer,
    "pepita": PEPITATrainer,
}


def build_trainer(name, model, make_optimizer, **options):
    """`build_trainer("bp", model, make_optimizer)`; `make_optimizer(params) -> Optimizer`."""
    if name not in TRAINERS:
        raise ValueError(f"Unknown trainer {name!r}; choose one of: {', '.join(TRAINERS)}.")
    return TRAINERS[name](model, make_optimizer, **options)


__all__ = [
    "AsyncDGLTrainer",
    "BackpropTrainer",
    "CDNITrainer",
    "DFATrainer",
    "DNITrainer",
    "DGLTrainer",
    "DRTPTrainer",
    "FATrainer",
    "FFTrainer",
    "ForwardGradientTrainer",
    "GreedyTrainer",
    "LLSMTrainer",
    "LLSMxMTrainer",
    "LLSTrainer",
    "LocalLossesTrainer",
    "PEPITATrainer",
    "ShallowTrainer",
    "SignDFATrainer",
    "Trainer",
    "TRAINERS",
    "build_trainer",
]
