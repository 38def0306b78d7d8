"""The module-parallel runtime: modules of a locally trained network running in separate worker processes.

Local learning (DGL, async DGL, LLS) sends nothing backwards across module boundaries, so module j+1 only
needs module j's output batches. This package will run each module (or group of modules) in its own
worker; what sits between two consecutive workers is a bounded buffer of (activation, label) batches:

- `shm_ring.SharedRing`: that buffer, in one shared-memory segment, with the replay policy of DGL's
  Algorithm 2 (`policy="replay"`) or strict FIFO for synchronous pipelining (`policy="fifo"`).

- `engine.run_module_parallel`: starts J spawned workers (contiguous module groups), feeds the data into
  the first ring, watches the workers (a dead one stops the run cleanly: `WorkerFailed`) and copies the
  trained modules back into the parent's trainer (see the `shm_ring` docstring, "Faults, and what the
  engine builds on this").

- `data_parallel.run_data_parallel`: synchronous data-parallel SGD (`dp-sync`): W workers, one model copy
  and one shard of every batch each, gradients averaged through shared memory every step.

- `simulate.simulate_pipeline` / `simulate.pipeline_throughput`: a documented model (per-stage compute,
  link bandwidth and latency, buffer policy, compressed buffers, shared cores) that predicts the
  throughput of J modules on J devices, by event-driven simulation and in closed form.
"""
from .data_parallel import fit_data_parallel, run_data_parallel
from .engine import WorkerFailed, fit_module_parallel, run_module_parallel, split_modules
from .shm_ring import POLICIES, RingBroken, RingClosed, RingEntry, RingHandle, SharedRing
from .simulate import pipeline_throughput, simulate_pipeline

__all__ = ["POLICIES", "RingBroken", "RingClosed", "RingEntry", "RingHandle", "SharedRing", "WorkerFailed", "fit_data_parallel", "fit_module_parallel",
           "pipeline_throughput", "run_data_parallel", "run_module_parallel", "simulate_pipeline", "split_modules"]
