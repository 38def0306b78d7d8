"""The parallel runtime: training spread over worker processes (one machine) or MPI ranks (machines).

Local learning (DGL, async DGL, LLS) sends nothing backwards across module boundaries, so each module (or
group) runs in its own worker, joined to the next by a bounded buffer of (activation, label) batches; DNI
also sends each synthesizer's target back. Data-parallel SGD (`sync`, `downpour`) runs on the same
machinery. `registry` is the one place that decides which engine (parallelism x transport) runs which
trainer; `mpi_engine` needs mpi4py (import it explicitly). Each file, the ring's layout and faults, MPI
messages, the metrics: docs/design/runtime.md (and docs/architecture.md's map).
"""

from .data_parallel import fit_data_parallel, fit_data_parallel_mpi, run_data_parallel, run_data_parallel_mpi
from .downpour import fit_downpour, run_downpour
from .engine import fit_module_parallel, run_module_parallel
from .epochs import epochs_on_workers
from .metrics import WorkerRecorder, plot_timeline, work_summary
from .pipeline import pipeline_worker_loop, split_modules
from .processes import WorkerFailed
from .shm_ring import POLICIES, RingBroken, RingClosed, RingEntry, RingHandle, SharedRing

__all__ = [
    "POLICIES",
    "RingBroken",
    "RingClosed",
    "RingEntry",
    "RingHandle",
    "SharedRing",
    "WorkerFailed",
    "WorkerRecorder",
    "fit_data_parallel",
    "fit_data_parallel_mpi",
    "fit_downpour",
    "fit_module_parallel",
    "epochs_on_workers",
    "pipeline_worker_loop",
    "plot_timeline",
    "run_data_parallel",
    "run_data_parallel_mpi",
    "run_downpour",
    "run_module_parallel",
    "split_modules",
    "work_summary",
]
