"""The one contract between trainers and parallel engines (tinydgl/runtime/registry.py), the old spellings
of the command's parallel options, and the flat packing of parameters (tinydgl/runtime/flat.py)."""

import argparse

import numpy as np
import pytest

from tinydgl.cli.checks import CommandError, check_parallel_options, resolve_parallel
from tinydgl.cli.parser import build_parser
from tinydgl.models import build_model
from tinydgl.optim import build_optimizer
from tinydgl.runtime import flat, registry
from tinydgl.trainers import TRAINERS, BackpropTrainer, build_trainer


def _trainer(name):
    model = build_model("mlp", in_channels=1, image_size=8, num_classes=10, seed=0)
    return build_trainer(name, model, lambda p: build_optimizer("sgd", p, lr=0.1))


def test_trainers_declare_where_they_run_and_the_registry_decides():
    assert registry.trainers_for("sync") == registry.trainers_for("downpour") == ["bp"]
    assert {"dgl", "async-dgl", "lls", "dni", "cdni", "drtp"} <= set(registry.trainers_for("module"))
    assert not {"bp", "greedy", "fa", "dfa", "sdfa", "ff"} & set(registry.trainers_for("module"))
    assert registry.check("module", "mpi", _trainer("dgl")) is registry.ENGINES[("module", "mpi")]
    with pytest.raises(
        ValueError,
        match=r"runs local trainers .* got 'fa' \(FA sends gradients down the whole "
        r"chain.*train 'fa' in-process",
    ):
        registry.check("module", "shm", _trainer("fa"))
    with pytest.raises(ValueError, match="has no 'mpi' transport; it runs over shm: choose --transport shm"):
        registry.check("downpour", "mpi", _trainer("bp"))
    with pytest.raises(ValueError, match="There is no 'pipeline' parallelism; choose from: module, sync, downpour"):
        registry.check("pipeline", "shm", _trainer("bp"))


def test_a_new_engine_and_trainer_are_one_entry_each(monkeypatch):
    """A fake parallelism and a trainer declaring it: the check, the command's checks and its --help accept
    them, with nothing else changed."""

    class FakeTrainer(BackpropTrainer):
        name = "fake"
        parallel = ("fake",)

    monkeypatch.setitem(
        registry.ENGINES, ("fake", "shm"), registry.Engine("fake", "shm", "tinydgl.runtime:epochs_on_workers")
    )
    monkeypatch.setitem(TRAINERS, "fake", FakeTrainer)
    model = build_model("mlp", in_channels=1, image_size=8, num_classes=10, seed=0)
    fake = FakeTrainer(model, lambda p: build_optimizer("sgd", p, lr=0.1))
    assert registry.check("fake", "shm", fake).fit_function().__name__ == "epochs_on_workers"
    with pytest.raises(ValueError, match=r"runs its trainers: fake \(FakeTrainer\); got .bp."):
        registry.check("fake", "shm", _trainer("bp"))
    train = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices["train"]
    help_text = next(a.help for a in train._actions if "--parallel" in a.option_strings)
    assert "fake: " in help_text and "(fake; over shm)" in help_text
    args = build_parser().parse_args(["train", "--trainer", "fake", "--parallel", "fake", "--workers", "2"])
    assert resolve_parallel(args) == [] and args.transport == "shm"
    check_parallel_options(args)  # accepted
    args = build_parser().parse_args(["train", "--trainer", "dgl", "--parallel", "fake", "--workers", "2"])
    resolve_parallel(args)
    with pytest.raises(CommandError, match="got 'dgl'. Choose one of those, or run 'dgl' with --parallel module"):
        check_parallel_options(args)


@pytest.mark.parametrize(
    "old, parallel, transport, notes",
    [
        (
            ["--trainer", "dp-sync", "--workers", "2"],
            "sync",
            "shm",
            ["--trainer dp-sync is deprecated: say --trainer bp --parallel sync."],
        ),
        (
            ["--trainer", "downpour", "--workers", "2", "--engine", "local"],
            "downpour",
            "shm",
            [
                "--trainer downpour is deprecated: say --trainer bp --parallel downpour.",
                "--engine local is deprecated: say --transport shm.",
            ],
        ),
        (
            ["--trainer", "dgl", "--workers", "2"],
            "module",
            "shm",
            ["--workers without --parallel is deprecated: say --parallel module."],
        ),
        (
            ["--trainer", "dgl", "--engine", "mpi"],
            "module",
            "mpi",
            [
                "--engine mpi is deprecated: say --transport mpi.",
                "--transport without --parallel is deprecated: say --parallel module.",
            ],
        ),
        (["--trainer", "dgl", "--parallel", "module", "--workers", "2"], "module", "shm", []),
        (["--trainer", "dgl"], None, None, []),
    ],
)
def test_old_spellings_keep_working_with_a_note(old, parallel, transport, notes):
    args = build_parser().parse_args(["train", *old])
    assert resolve_parallel(args) == notes
    assert (args.parallel, args.transport) == (parallel, transport)


def test_flat_packing_round_trips_in_the_optimizers_order():
    trainer = _trainer("bp")
    params = trainer.optimizer.params
    size = flat.flat_size(params)
    assert size == trainer.model.num_parameters()
    packed = flat.pack([p.data for p in params], np.zeros(size, params[0].data.dtype))
    views = flat.unpack(packed, params)
    assert all(np.array_equal(v, p.data) and v.shape == p.data.shape for v, p in zip(views, params))
    flat.pack([p.data for p in params], packed, accumulate=True)
    flat.set_gradients(params, packed)
    assert all(np.array_equal(p.grad, 2 * p.data) for p in params)
    with pytest.raises(RuntimeError, match="got no gradient; the test uses every parameter's gradient"):
        params[0].grad = None
        flat.gradients(params, "the test")
    flat.set_weights(params, np.zeros(size, params[0].data.dtype))
    assert all(not p.data.any() for p in params)
