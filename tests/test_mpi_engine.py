"""The MPI engine (tinydgl.runtime.mpi_engine) under `mpiexec -n 2`: the CLI end to end, equivalence with the
in-process trainer, async-dgl's replay links, a failing rank, and dp-sync over MPI.

Every test starts an MPI job as a subprocess (with a timeout, so a deadlock fails the test rather than
hanging CI) and never imports `mpi4py.MPI` into the pytest process. Each job costs a second or two.
"""

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _mpiexec():
    beside_python = os.path.join(sys.prefix, "bin", "mpiexec")  # where the PyPI mpich wheel puts it
    return beside_python if os.path.exists(beside_python) else shutil.which("mpiexec")


if importlib.util.find_spec("mpi4py") is None:
    pytest.skip(
        "mpi4py is not installed (pip install -e '.[test]' or '.[mpi]' brings it and the mpich wheel)",
        allow_module_level=True,
    )
if _mpiexec() is None:
    pytest.skip(
        f"no mpiexec in {os.path.join(sys.prefix, 'bin')} or on PATH (pip install mpich)", allow_module_level=True
    )

COMMON = ["--model", "cnn", "--limit-train", "512", "--limit-test", "256", "--no-progress"]
TIMEOUT = 90  # seconds for one job: a hang fails instead of blocking CI


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "TINYDGL_MPI_TEST_FAIL_RANK"}
    env.update(
        PYTHONPATH=ROOT + os.pathsep + env.get("PYTHONPATH", ""),
        OPENBLAS_NUM_THREADS="1",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        **extra,
    )
    return env


def _job(command, env=None):
    """Run `command` in its own process group; on a timeout kill the whole group (mpiexec, its proxies and
    every rank), so a hung job fails the test and leaves nothing behind."""
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env or _env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"{' '.join(command)} did not finish within {TIMEOUT} s (a deadlock?)")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def _run(args, ranks=2, mpi=True, env=None):
    command = (
        [_mpiexec(), "-n", str(ranks), sys.executable, "-m", "mpi4py", "-m", "tinydgl"]
        if mpi
        else [sys.executable, "-m", "tinydgl"]
    ) + args
    return _job(command, env)


def _train(tmp_path, name, *args, ranks=2, mpi=True, env=None):
    out = _run(
        [
            "train",
            *COMMON,
            *args,
            "--checkpoint-dir",
            str(tmp_path / name),
            "--metrics-json",
            str(tmp_path / f"{name}.json"),
        ],
        ranks,
        mpi,
        env,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads((tmp_path / f"{name}.json").read_text()), out


def _assert_same_weights(dir_a, dir_b):
    from tinydgl.train.checkpoint import load_checkpoint

    (a, meta_a), (b, meta_b) = load_checkpoint(dir_a), load_checkpoint(dir_b)
    assert meta_a["epoch"] == meta_b["epoch"]
    for key in b["model"]:
        np.testing.assert_allclose(a["model"][key], b["model"][key], rtol=0, atol=1e-6, err_msg=key)
    for name in b["aux"]:
        for key in b["aux"][name]:
            np.testing.assert_allclose(a["aux"][name][key], b["aux"][name][key], rtol=0, atol=1e-6)
    assert [o["steps"] for o in a["optimizers"]] == [o["steps"] for o in b["optimizers"]]
    for oa, ob in zip(a["optimizers"], b["optimizers"]):
        for key in ob["buffers"]:
            np.testing.assert_allclose(oa["buffers"][key], ob["buffers"][key], rtol=0, atol=1e-6)


def test_fifo_dgl_over_mpi_gives_the_in_process_weights_and_resumes(tmp_path):
    """No gradient crosses a module boundary and the fifo links keep every batch in order, so each rank's
    module sees exactly the in-process trainer's inputs: same weights after 2 epochs, whether run in one go
    or stopped after epoch 1 and resumed (rank 0 reads the checkpoint and scatters it)."""
    # mlp (batch norm) with schedule-free AdamW and recalibration: rank 0 swaps x/y around each epoch,
    # recalibrates the whole model it holds, and scatters the training weights for the next epoch
    protocol = ["--model", "mlp", "--optimizer", "adamw-sf", "--bn-recalibrate", "2"]
    reference, _ = _train(tmp_path, "ref", "--trainer", "dgl", "--epochs", "2", *protocol, mpi=False)
    metrics, out = _train(
        tmp_path,
        "mpi",
        "--trainer",
        "dgl",
        "--engine",
        "mpi",
        "--epochs",
        "2",
        *protocol,
        "--plot",
        str(tmp_path / "curves.png"),
    )
    _assert_same_weights(tmp_path / "mpi", tmp_path / "ref")
    assert out.stdout.count("test accuracy") == 1  # rank 0 alone prints
    for got, expected in zip(metrics["history"], reference["history"]):
        assert got["test_accuracy"] == pytest.approx(expected["test_accuracy"])
        assert got["train_loss"] == pytest.approx(expected["train_loss"], abs=1e-5)
    epoch = metrics["history"][0]
    assert epoch["transport"] == "mpi" and epoch["policy"] == "fifo"
    assert [w["worker"] for w in epoch["workers"]] == [0, 1]
    assert [w["modules"] for w in epoch["workers"]] == [[0], [1]]
    assert [w["steps"] for w in epoch["workers"]] == [4, 4]  # 512 images in batches of 128
    for w in epoch["workers"]:
        assert len(w["timeline"]) == 4 and all(0 <= a <= b for a, b in w["timeline"])
    assert epoch["rings"][1]["pushed"] == epoch["rings"][1]["served"] == epoch["rings"][1]["sent"] == 4
    assert (tmp_path / "curves.png").exists() and (tmp_path / "curves-timeline.png").exists()

    _train(tmp_path, "resumed", "--trainer", "dgl", "--engine", "mpi", "--epochs", "1", *protocol)
    resumed, out = _train(
        tmp_path, "resumed", "--trainer", "dgl", "--engine", "mpi", "--epochs", "2", *protocol, "--resume"
    )
    assert "resumed from" in out.stdout
    _assert_same_weights(tmp_path / "resumed", tmp_path / "ref")
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]


def test_three_ranks_a_middle_rank_both_receives_and_sends(tmp_path):
    """With 3 ranks, rank 1 has a source and a sink: the end-of-run handshake runs on both of its links."""
    small = ["--model", "smallconv", "--trainer", "dgl", "--epochs", "1"]
    _train(tmp_path, "ref3", *small, mpi=False)
    metrics, _ = _train(tmp_path, "mpi3", *small, "--engine", "mpi", ranks=3)
    _assert_same_weights(tmp_path / "mpi3", tmp_path / "ref3")
    workers = metrics["history"][0]["workers"]
    assert [w["steps"] for w in workers] == [4, 4, 4]
    assert sorted(j for w in workers for j in w["modules"]) == [0, 1, 2, 3]  # every module, each once


def test_async_dgl_over_mpi_uses_replay_links_and_reports_them(tmp_path):
    metrics, _ = _train(
        tmp_path, "async", "--trainer", "async-dgl", "--buffer-size", "2", "--engine", "mpi", "--epochs", "2"
    )
    for epoch in metrics["history"]:
        first, second = epoch["workers"]
        assert epoch["policy"] == "replay" and epoch["rings"][1]["policy"] == "replay"
        assert epoch["rings"][1]["slots"] == 2
        # the consumer replays stored batches while it waits, so how many steps it makes depends on timing
        # (5 were seen on a loaded machine); what it learned from fresh is at most the 4 batches sent
        assert first["steps"] == 4 and 1 <= second["fresh_batches"] <= 4
        assert second["steps"] == second["fresh_batches"] + second["replayed_batches"]
        for key in ("empty_polls", "replayed_batches", "staleness_mean", "occupancy_mean"):
            assert second[key] >= 0
        assert epoch["rings"][1]["sent"] == 4  # every batch was sent; the consumer stored, replayed or dropped it
        for w in (first, second):  # the counts add up, and samples/s counts what both ranks learned from
            assert w["fresh_batches"] + w["skipped_batches"] == 4
            assert w["fresh_samples"] + w["replayed_samples"] == w["samples"]
        assert epoch["fed_samples"] == first["fresh_samples"] == 512
        assert epoch["samples_per_second"] * epoch["seconds"] == pytest.approx(second["fresh_samples"])
    assert np.isfinite(metrics["history"][-1]["test_loss"])


SLOW_CONSUMER_SCRIPT = textwrap.dedent("""
    import json
    import sys
    from mpi4py import MPI
    from tinydgl.data import DataLoader, load_dataset
    from tinydgl.models import build_model
    from tinydgl.optim import build_optimizer
    from tinydgl.runtime.mpi_engine import run_module_parallel_mpi
    from tinydgl.trainers import build_trainer

    ds = load_dataset("mnist-small", limit_train=256, limit_test=64, progress=False)
    loader = DataLoader(ds.x_train, ds.y_train, 32, seed=0, mean=ds.mean, std=ds.std)
    # split by count: rank 1's modules (16 -> 1024 with a 1024-wide head, 1024 -> 1024) cost ~50 ms a step,
    # over 10x rank 0's (784 -> 16 -> 16, heads 16 wide)
    model = build_model("mlp", in_channels=1, image_size=28, num_classes=10, seed=0, hidden=(16, 16, 1024, 1024))
    trainer = build_trainer("async-dgl", model, lambda p: build_optimizer("adam", p, lr=1e-3), buffer_size=2)
    metrics = run_module_parallel_mpi(trainer, loader, 1, balance=False)
    if MPI.COMM_WORLD.Get_rank() == 0:
        json.dump(metrics, open(sys.argv[1], "w"))
""")


def test_replay_over_mpi_counts_only_what_every_rank_learned_from(tmp_path):
    """The issue's case over MPI: rank 1 is far slower than rank 0 and skips most batches (its replay buffer
    overwrites them unseen), so samples/s is rank 1's fresh samples per second, not rank 0's."""
    script = tmp_path / "slow.py"
    script.write_text(SLOW_CONSUMER_SCRIPT)
    out = _job([_mpiexec(), "-n", "2", sys.executable, "-m", "mpi4py", str(script), str(tmp_path / "m.json")])
    assert out.returncode == 0, out.stdout + out.stderr
    metrics = json.loads((tmp_path / "m.json").read_text())
    first, second = metrics["workers"]
    assert [w["modules"] for w in metrics["workers"]] == [[0, 1], [2, 3]]
    assert first["fresh_batches"] == 8 and metrics["fed_samples"] == 256
    assert second["skipped_batches"] > 0 and second["fresh_batches"] + second["skipped_batches"] == 8
    assert second["fresh_batches"] + second["replayed_batches"] == second["steps"]
    assert metrics["samples"] == second["fresh_samples"] < metrics["fed_samples"]
    assert metrics["samples_per_second"] == pytest.approx(metrics["samples"] / metrics["seconds"])


def test_a_failing_rank_stops_the_whole_job(tmp_path):
    """Rank 1 raises after its first batch (a test hook): the job aborts, mpiexec exits non-zero, and
    nothing waits for the dead rank (50 epochs would take far longer than the timeout)."""
    out = _run(
        ["train", *COMMON, "--trainer", "dgl", "--engine", "mpi", "--epochs", "50"],
        env=_env(TINYDGL_MPI_TEST_FAIL_RANK="1"),
    )
    assert out.returncode != 0
    assert "failure injected by TINYDGL_MPI_TEST_FAIL_RANK=1" in out.stderr


def test_cli_refuses_a_wrong_launch():
    alone = _run(["train", *COMMON, "--trainer", "dgl", "--engine", "mpi"], mpi=False)
    assert alone.returncode == 1 and "mpiexec -n J python -m mpi4py -m tinydgl" in alone.stderr
    mismatch = _run(["train", *COMMON, "--trainer", "dgl", "--engine", "mpi", "--workers", "3"])
    assert mismatch.returncode != 0 and "--workers 3 but mpiexec started 2 rank(s)" in mismatch.stderr
    # an error raised on every rank inside the run: each aborts, none carries on with a missing history
    wrong = _run(["train", *COMMON, "--trainer", "bp", "--engine", "mpi"])
    assert wrong.returncode != 0 and "runs local trainers" in wrong.stderr and "NoneType" not in wrong.stderr


DP_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    from mpi4py import MPI
    from tinydgl.data import DataLoader, load_dataset
    from tinydgl.models import build_model
    from tinydgl.optim import build_optimizer
    from tinydgl.runtime.mpi_engine import run_data_parallel_mpi
    from tinydgl.trainers import build_trainer

    ds = load_dataset("mnist-small", limit_train=150, limit_test=64, progress=False)
    loader = DataLoader(ds.x_train, ds.y_train, 64, seed=0, mean=ds.mean, std=ds.std, dtype="float64")
    model = build_model("cnn", in_channels=1, image_size=28, num_classes=10, seed=0, dtype="float64")
    trainer = build_trainer("bp", model, lambda p: build_optimizer("sgd", p, lr=0.05, momentum=0.9))
    metrics = run_data_parallel_mpi(trainer, loader, 2)
    if MPI.COMM_WORLD.Get_rank() == 0:
        np.savez(sys.argv[1], train_loss=np.array(metrics["train_loss"]), steps=metrics["steps"],
                 **{"model/" + k: v for k, v in trainer.state_dict()["model"].items()})
""")


def test_dp_sync_over_mpi_matches_single_process_large_batch_sgd(tmp_path):
    """The averaged (all-reduced) shard gradients are the whole batch's gradient: after two epochs (an uneven
    last batch of 22 included) the weights equal single-process backprop on whole batches, in float64."""
    from tinydgl.data import DataLoader, load_dataset
    from tinydgl.models import build_model
    from tinydgl.optim import build_optimizer
    from tinydgl.trainers import build_trainer

    script = tmp_path / "dp.py"
    script.write_text(DP_SCRIPT)
    command = [_mpiexec(), "-n", "2", sys.executable, "-m", "mpi4py", str(script), str(tmp_path / "dp.npz")]
    out = _job(command)
    assert out.returncode == 0, out.stdout + out.stderr

    ds = load_dataset("mnist-small", limit_train=150, limit_test=64, progress=False)
    loader = DataLoader(ds.x_train, ds.y_train, 64, seed=0, mean=ds.mean, std=ds.std, dtype="float64")
    model = build_model("cnn", in_channels=1, image_size=28, num_classes=10, seed=0, dtype="float64")
    reference = build_trainer("bp", model, lambda p: build_optimizer("sgd", p, lr=0.05, momentum=0.9))
    losses = []
    for epoch in range(2):
        loader.set_epoch(epoch)
        losses.append([(reference.train_step(x, y), int(y.shape[0])) for x, y in loader])
    got = np.load(tmp_path / "dp.npz")
    assert int(got["steps"]) == 2 * len(loader)
    for key, value in reference.state_dict()["model"].items():
        np.testing.assert_allclose(got["model/" + key], value, rtol=0, atol=1e-10, err_msg=key)
    for e in range(2):
        n = sum(s for _, s in losses[e])
        assert got["train_loss"][e] == pytest.approx(sum(l * s for l, s in losses[e]) / n, abs=1e-10)


def test_cli_dp_sync_over_mpi_reports_the_same_work_counts_as_the_other_engines(tmp_path):
    """Through the command (epochs_on_workers' epoch line, the metrics file): every rank learned from its shard
    of every batch once, reported with the keys every engine's workers have."""
    metrics, out = _train(tmp_path, "dp", "--trainer", "dp-sync", "--engine", "mpi", "--epochs", "1")
    assert "test accuracy" in out.stdout and "learned from" not in out.stdout
    workers = metrics["history"][0]["workers"]
    assert [w["fresh_batches"] for w in workers] == [4, 4]  # 512 images in batches of 128
    assert all(w["replayed_batches"] == w["skipped_batches"] == 0 for w in workers)
    assert metrics["history"][0]["samples"] == 512


def test_drtp_over_mpi_gives_the_in_process_weights(tmp_path):
    """DRTP needs only the label, so it is a local learner: over MPI its modules learn what they learn in one
    process (the feedback matrices are drawn from the seed on every rank alike)."""
    small = ["--model", "mlp", "--trainer", "drtp", "--epochs", "1"]
    _train(tmp_path, "ref", *small, mpi=False)
    metrics, _ = _train(tmp_path, "mpi", *small, "--engine", "mpi")
    _assert_same_weights(tmp_path / "mpi", tmp_path / "ref")
    assert len(metrics["history"][0]["workers"]) == 2


def test_dni_over_mpi_sends_targets_back_and_lock_step_bp_lambda_is_exact(tmp_path):
    """DNI's ranks send each boundary synthesizer's target back down (its own tags, BACK). With BP(lambda) > 0
    every rank waits for it before updating (lock-step): the in-process weights exactly, also resumed."""
    exact = [
        "--model",
        "mlp",
        "--trainer",
        "cdni",
        "--synthesizer",
        "linear",
        "--bp-lambda",
        "0.5",
        "--update-prob",
        "0.5",
    ]
    _train(tmp_path, "ref", *exact, "--epochs", "2", mpi=False)
    _train(tmp_path, "mpi", *exact, "--engine", "mpi", "--epochs", "1")
    _, out = _train(tmp_path, "mpi", *exact, "--engine", "mpi", "--epochs", "2", "--resume")
    assert "resumed from" in out.stdout and "synthesizer targets sent back down" in out.stdout
    _assert_same_weights(tmp_path / "mpi", tmp_path / "ref")

    # lambda = 0: update unlocked, the targets come back late; 2 ranks still learn (0.91 in one process;
    # 0.83 if the lower groups never learned)
    learn = [
        "--model",
        "mlp",
        "--trainer",
        "cdni",
        "--synthesizer",
        "linear",
        "--limit-train",
        "4000",
        "--batch-size",
        "64",
        "--limit-test",
        "1000",
        "--epochs",
        "2",
    ]
    metrics, _ = _run_train(tmp_path, "late", learn)
    assert metrics["history"][-1]["test_accuracy"] > 0.88
    lower = metrics["history"][-1]["workers"][0]
    assert lower["targets_received"] == 63 and sum(lower["target_lateness_counts"].values()) == 63


def _run_train(tmp_path, name, args):
    out = _run(["train", "--no-progress", *args, "--engine", "mpi", "--metrics-json", str(tmp_path / f"{name}.json")])
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads((tmp_path / f"{name}.json").read_text()), out
