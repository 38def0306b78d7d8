"""Which parallel engine runs which trainer, and over which transport: the one place that decides.

Engines are keyed by (parallelism: module | sync | downpour, transport: shm | mpi; described below). A
trainer declares the parallelisms it supports, `parallel = ("module",)` (default: none; `parallel_note`
says why not); an engine says where its fit function is and which backends it runs on. A new engine is
one `register(Engine(...))` line, a new trainer its `parallel` declaration (for "module" also the pipeline
methods of `runtime/stages.py`); the engines' checks, the command's checks and its help read this file.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from ..backend import get_backend

# parallelism -> (what it is called in a sentence, what kind of trainer it runs)
PARALLELISMS = {
    "module": ("The module-parallel engine", "local trainers and synthetic gradients"),
    "sync": ("Synchronous data-parallel SGD", "backprop in every worker, each on its shard of every batch"),
    "downpour": ("Downpour SGD", "backprop in every worker, pushing gradients to a parameter server"),
}
TRANSPORTS = {
    "shm": "worker processes on this machine, joined by shared memory (--workers J)",
    "mpi": "one MPI rank per worker: mpiexec -n J python -m mpi4py -m tinydgl train --transport mpi ...",
}
BACKEND_NAMES = {"numpy": "NumPy", "cupy": "CuPy"}


@dataclass(frozen=True)
class Engine:
    """One way to train in parallel. fit: "module:function" of its `fit_*` entry point (imported when used:
    the MPI ones need mpi4py); backends: where it runs; options: the command's options only it reads."""

    parallel: str
    transport: str
    fit: str
    backends: tuple = ("numpy",)
    options: tuple = ()

    def fit_function(self):
        module, name = self.fit.split(":")
        return getattr(importlib.import_module(module), name)


ENGINES: dict = {}


def register(engine):
    """Add an engine (or replace the one with the same key); returns it."""
    ENGINES[(engine.parallel, engine.transport)] = engine
    return engine


register(Engine("module", "shm", "tinydgl.runtime.engine:fit_module_parallel", ("numpy", "cupy"), ("devices",)))
register(Engine("module", "mpi", "tinydgl.runtime.mpi_engine:fit_module_parallel_mpi", ("numpy", "cupy")))
register(Engine("sync", "shm", "tinydgl.runtime.data_parallel:fit_data_parallel"))
register(Engine("sync", "mpi", "tinydgl.runtime.data_parallel:fit_data_parallel_mpi"))
register(Engine("downpour", "shm", "tinydgl.runtime.downpour:fit_downpour", options=("n_fetch", "n_push")))


def parallelisms():
    """Every parallelism some engine offers, in registration order."""
    return list(dict.fromkeys(p for p, _ in ENGINES))


def transports(parallel=None):
    """The transports of `parallel`'s engines (of every engine if None)."""
    return list(dict.fromkeys(t for p, t in ENGINES if parallel in (None, p)))


def trainers_for(parallel):
    """Names of the trainers (tinydgl.trainers.TRAINERS) that declare `parallel`."""
    from ..trainers import TRAINERS

    return [name for name, cls in TRAINERS.items() if parallel in getattr(cls, "parallel", ())]


def supported(trainer_name):
    """The parallelisms trainer `trainer_name` declares that have an engine."""
    return [p for p in parallelisms() if trainer_name in trainers_for(p)]


def _said(parallel):
    """(name in a sentence, the trainers it runs) of a parallelism."""
    return PARALLELISMS.get(parallel, (f"The {parallel!r} engine", "its trainers"))


def find(parallel, transport):
    """The engine for (parallel, transport); a ValueError saying what exists if there is none."""
    if (parallel, transport) in ENGINES:
        return ENGINES[(parallel, transport)]
    if parallel not in parallelisms():
        raise ValueError(f"There is no {parallel!r} parallelism; choose from: {', '.join(parallelisms())}.")
    raise ValueError(
        f"{_said(parallel)[0]} has no {transport!r} transport; it runs over "
        f"{' or '.join(transports(parallel))}: choose --transport {transports(parallel)[0]}."
    )


def check(parallel, transport, trainer):
    """Refuse a (parallel, transport) pair without an engine, a trainer that does not declare `parallel`,
    or an active backend the engine does not run on; returns the engine."""
    engine = find(parallel, transport)
    name = getattr(trainer, "name", type(trainer).__name__)
    if parallel not in getattr(trainer, "parallel", ()):
        raise ValueError(refusal(parallel, name, getattr(trainer, "parallel_note", "")))
    active = get_backend().name
    if active not in engine.backends:
        names = " or ".join(BACKEND_NAMES.get(b, b) for b in engine.backends)
        only = " only for now" if len(engine.backends) == 1 else ""
        raise ValueError(
            f"{_said(parallel)[0]} runs on the {names} backend{only} (active backend: {active!r}); "
            f"switch to {engine.backends[0]}."
        )
    return engine


def refusal(parallel, name, note=""):
    """The sentence for a trainer `name` that does not run with `parallel`: what runs there, what to do."""
    from ..trainers import TRAINERS

    fits = trainers_for(parallel)
    listed = ", ".join(f"{n} ({TRAINERS[n].__name__})" if len(fits) <= 2 else n for n in fits)
    others = [p for p in supported(name) if p != parallel]
    instead = f"run {name!r} with --parallel {' or '.join(others)}" if others else f"train {name!r} in-process"
    why = f" ({note})" if note else ""
    return (
        f"{_said(parallel)[0]} runs {_said(parallel)[1]}: {listed}; got "
        f"{name!r}{why}. Choose one of those, or {instead}."
    )
