"""A shared ring whose activations stay on the GPUs: CUDA IPC between two worker processes.

UNTESTED ON A GPU: no GPU has run this file yet (written against CuPy 14's documented API). On the CuPy
stand-in the engine always takes the fallback, a host-staged `SharedRing`, and the tests check that it
does; `TINYDGL_DEVICE_LINKS=0` turns the device path off. A `DeviceRing` keeps the `SharedRing` segment for
the bookkeeping and the labels, but its activation slots are allocations in the producer's GPU memory,
named by IPC handles; the consumer copies each batch device to device, and the producer's `finish` waits
until the consumer has finished reading.

Design notes (why: the copies a host ring costs; allocation, peer copies, lifetime): docs/design/runtime.md,
"Activations that stay on the GPUs".
"""

from __future__ import annotations

import os
import time

import numpy as np

from .processes import POLL_S
from .shm_ring import IPC_HANDLE_BYTES, PRODUCER_DEVICE, READ_TO_END, SharedRing

SWITCH = "TINYDGL_DEVICE_LINKS"  # "0": stage activations through host memory even where IPC works


def device_links_available():
    """(True, why) where activations can stay on the GPUs (CuPy with CUDA IPC, not switched off), else
    (False, why): NumPy, the CuPy stand-in, or a CUDA that refuses IPC (e.g. some virtualised GPUs)."""
    if os.environ.get(SWITCH) == "0":
        return False, f"{SWITCH}=0"
    try:
        import cupy

        memory = cupy.cuda.Memory(IPC_HANDLE_BYTES)
        cupy.cuda.runtime.ipcGetMemHandle(memory.ptr)
    except Exception as err:  # NotImplementedError on the stand-in, a CUDA error where IPC is refused
        return False, f"CUDA IPC unavailable ({type(err).__name__})"
    return True, "CUDA IPC (untested: no GPU has run it yet)"


class DeviceRing(SharedRing):
    """A `SharedRing` (same arguments, policies, `put`/`get`/`finish`) whose activations live in the
    producer's GPU memory; `get` returns them as a CuPy array on the consumer's device. See the module
    docstring, and its warning."""

    on_device = True

    def _open(self, handle, shm, owner):
        super()._open(handle, shm, owner)
        self._memory = self._pointers = None  # the producer's allocations; the consumer's opened handles

    @staticmethod
    def _staged(x):
        import cupy

        return cupy.asarray(x)  # put copies from the device; a host array is moved there first

    def _write(self, slot, x, n):
        import cupy

        runtime = cupy.cuda.runtime
        if self._memory is None:  # the first put: allocate the slots and publish their handles
            size = self.handle.max_batch * self._per_sample * np.dtype(self.handle.dtype).itemsize
            self._memory = [cupy.cuda.Memory(size) for _ in range(self.handle.slots)]
            for i, memory in enumerate(self._memory):
                self._handles[i] = np.frombuffer(runtime.ipcGetMemHandle(memory.ptr), np.uint8)
            self._ring[PRODUCER_DEVICE] = runtime.getDevice()
        x = cupy.ascontiguousarray(x.astype(self.handle.dtype, copy=False))
        runtime.memcpy(self._memory[slot].ptr, x.data.ptr, x.nbytes, runtime.memcpyDefault)
        runtime.deviceSynchronize()  # the consumer, another process, reads it as soon as the slot is READY

    def _read(self, slot, n):
        import cupy

        runtime = cupy.cuda.runtime
        if self._pointers is None:  # the first get: map the producer's slots into this process
            self._pointers = [runtime.ipcOpenMemHandle(bytes(h)) for h in self._handles]
        x = cupy.empty((n, *self.handle.sample_shape), self.handle.dtype)  # on this worker's device
        runtime.memcpy(x.data.ptr, self._pointers[slot], x.nbytes, runtime.memcpyDefault)  # peer copy if need be
        runtime.deviceSynchronize()  # the slot goes back to the producer when get returns
        return x

    def finish(self):
        """The consumer: say it has read its last batch. The producer: mark the ring stopped, then keep its
        memory until the consumer has said so (RingClosed if the run is aborted meanwhile)."""
        if self._memory is None:
            self._acquire_lock()
            self._ring[READ_TO_END] = 1
            self._lock.release()
        super().finish()
        while self._memory is not None and not self._ring[READ_TO_END]:
            self._check_open()
            time.sleep(POLL_S)

    def close(self):
        if self._pointers is not None and not self._closed:
            import cupy

            for pointer in self._pointers:
                cupy.cuda.runtime.ipcCloseMemHandle(pointer)
        self._memory = self._pointers = None
        super().close()
