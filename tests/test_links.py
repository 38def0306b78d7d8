"""The links between pipeline workers (`tinydgl.runtime.links`): every transport keeps the one contract."""

import numpy as np

from tinydgl.runtime.links import LoaderSource, MpiSink, MpiSource, Sink, Source
from tinydgl.runtime.shm_ring import SharedRing


def test_every_transport_implements_the_contract():
    # the MPI ends only keep their communicator until they are used, so None stands in for one here
    with SharedRing(2, 4, (3,)) as ring:
        assert isinstance(ring, Source) and isinstance(ring, Sink)
    assert isinstance(MpiSource(None, 0, "fifo", 2, None, (3,), "float32", False), Source)
    assert isinstance(MpiSink(None, 1, 2, "float32"), Sink)
    assert isinstance(LoaderSource(None, [], 0, 1), Source)


def test_a_ring_says_its_producer_stopped_in_every_process_that_holds_it():
    with SharedRing(2, 4, (3,), policy="replay") as ring:
        consumer = SharedRing.attach(ring.handle)  # another process's view of the same segment
        ring.put(np.ones((2, 3), np.float32), np.arange(2))
        assert not consumer.producer_stopped()
        ring.finish()
        assert consumer.producer_stopped()
        x, labels, entry = consumer.get(timeout=0)  # what was put before the stop is still served
        assert entry.uses == 1 and labels.tolist() == [0, 1]
        consumer.close()


def test_the_loader_as_a_source_counts_what_it_served():
    class Loader(list):
        def set_epoch(self, epoch):
            pass

    class Trainer:
        def start_epoch(self, epoch):
            pass

    source = LoaderSource(Trainer(), Loader([(np.zeros((2, 3)), np.arange(2))] * 3), 0, 2)
    assert [source.get()[2] for _ in range(6)] == [None] * 6  # raw data: no ring entry
    source.finish()
    assert source.stats()["served"] == source.stats()["pushed"] == 6
