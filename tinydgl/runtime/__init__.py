"""The parallel runtime: training spread over worker processes (one machine) or MPI ranks (machines).

Local learning (DGL, async DGL, LLS) sends nothing backwards across module boundaries, so module j+1 only
needs module j's output batches; DNI sends back only each synthesizer's target, and learns from it late. This package runs each module (or group of modules) in its own worker;
what sits between two consecutive workers is a bounded buffer of (activation, label) batches. It also runs
data-parallel SGD (every worker a whole model copy), synchronous and asynchronous, on the same machinery:

- `shm_ring.SharedRing`: that buffer, in one shared-memory segment, with the replay policy of DGL's
  Algorithm 2 (`policy="replay"`) or strict FIFO for synchronous pipelining (`policy="fifo"`).

- `processes`: how every local engine starts, watches and stops its worker processes (`WorkerFailed`).

- `engine.run_module_parallel`: starts J spawned workers (contiguous module groups), feeds the data into
  the first ring, watches the workers (a dead one stops the run cleanly: `WorkerFailed`) and copies the
  trained modules back into the parent's trainer (see the `shm_ring` docstring, "Faults, and what the
  engine builds on this").

- `registry`: which engine, keyed by (parallelism: module | sync | downpour, transport: shm | mpi), runs
  which trainer (each trainer declares `parallel = (...)`); the only place that decides it.

- `data_parallel.run_data_parallel`: synchronous data-parallel SGD (`--parallel sync`): W workers, one
  model copy and one shard of every batch each, gradients averaged every step, through shared memory or
  (`run_data_parallel_mpi`) MPI's Allreduce; `flat`: parameters and gradients packed into one vector.

- `downpour.run_downpour`: Downpour SGD (`downpour`): W workers push gradients computed at stale weights
  to the parent, a parameter server that applies each push as it arrives; staleness is recorded per push.

- `stages`: what one worker runs (its modules, or for DNI/cDNI its groups and synthesizers) and how a
  trainer is cut into stages. DNI's stages also talk *back*: each boundary has a second link, downwards,
  carrying the synthesizer targets (the true or bootstrapped gradient), which arrive batches late.

- `pipeline`: the module pipeline without its transport (the plan, `pipeline_worker_loop`: the loop every
  module worker runs, and the result), over `links`: the contract (`Source`, `Sink`) that a `SharedRing`
  and the MPI links implement;
  `metrics.WorkerRecorder`: what each worker did and when (busy/idle, fresh/replayed/skipped batches,
  staleness, occupancy, timeline), `metrics.work_summary` (the same in one line), `metrics.plot_timeline`;
  `epochs.epochs_on_workers`: epochs, evaluation and checkpoints for every engine.

- `mpi_engine` (import it explicitly: it needs mpi4py): the same module pipeline with one MPI rank per
  worker, launched by `mpiexec -n J python -m mpi4py -m tinydgl train --transport mpi ...`.

What a pipeline *would* do on J devices (a throughput model, not a runtime) is `tinydgl.simulate`.
"""
from .data_parallel import fit_data_parallel, fit_data_parallel_mpi, run_data_parallel, run_data_parallel_mpi
from .downpour import fit_downpour, run_downpour
from .engine import fit_module_parallel, run_module_parallel
from .epochs import epochs_on_workers
from .metrics import WorkerRecorder, plot_timeline, work_summary
from .pipeline import pipeline_worker_loop, split_modules
from .processes import WorkerFailed
from .shm_ring import POLICIES, RingBroken, RingClosed, RingEntry, RingHandle, SharedRing

__all__ = ["POLICIES", "RingBroken", "RingClosed", "RingEntry", "RingHandle", "SharedRing", "WorkerFailed",
           "WorkerRecorder", "fit_data_parallel", "fit_data_parallel_mpi", "fit_downpour", "fit_module_parallel",
           "epochs_on_workers", "pipeline_worker_loop", "plot_timeline", "run_data_parallel", "run_data_parallel_mpi",
           "run_downpour", "run_module_parallel", "split_modules", "work_summary"]
