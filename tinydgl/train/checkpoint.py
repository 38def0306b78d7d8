"""Checkpoints that survive a crash at any moment, know what run they belong to, and are checked on resume.

Arrays go in `.npz`, everything else in JSON, no pickle. Layout of a checkpoint directory:

    state-epoch0003.npz            arrays after 3 finished epochs: model parameters/buffers, auxiliary
    state-epoch0003-step00120.npz  modules, optimizer buffers, the trainer's resume arrays (e.g. async DGL's
                                   replay buffers); the second: 120 batches into epoch 4 (`--checkpoint-every`)
    latest.json                    the newest checkpoint's record: where it is in training (epoch, step),
                                   history, optimizer scalars, RNG states, what run it belongs to ("run":
                                   trainer, model, dataset, the options that shape parameters, tinydgl
                                   version; "shapes": every array's shape), the SHA-256 of its .npz, and the
                                   SHA-256 of the record itself
    previous.json                  the record before it, whose .npz is kept too (the last two are kept)

Writing is atomic: each file is written under a temporary name, flushed to disk, then renamed. The rename
of `latest.json` is the commit point, so a run killed at any moment leaves either the previous complete
checkpoint or the new complete one, never a half-written one. A file damaged afterwards (a disk error, a
copy cut short) is found by its SHA-256 on resume and refused by name; `previous.json` is then still there
to resume from (`load_checkpoint(..., which="previous")`, the command's `--resume previous`).
"""
import hashlib
import json
import os
import tempfile
import time

import numpy as np

FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)  # format 1 (before 2026-12): epoch-boundary checkpoints without "run"/"shapes"
RECORDS = ("latest", "previous")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupted or does not belong to this run."""


def _atomic_write(path, write):
    """Call write(file) on a temporary file in path's directory, fsync it, then rename it to path."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _record_sha256(meta):
    """SHA-256 of a record without its own "record_sha256" key (JSON with sorted keys: one text per record)."""
    body = {k: v for k, v in meta.items() if k != "record_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _flatten(trainer_state, resume_arrays):
    """Split a trainer state into arrays (for the .npz) and JSON-able scalars."""
    arrays = {f"model/{k}": v for k, v in trainer_state["model"].items()}
    for name, state in trainer_state.get("aux", {}).items():
        arrays.update({f"aux/{name}/{k}": v for k, v in state.items()})
    optimizers = []
    for i, opt in enumerate(trainer_state["optimizers"]):
        arrays.update({f"optim{i}/{k}": v for k, v in opt["buffers"].items()})
        optimizers.append({"lr": opt["lr"], "steps": opt["steps"], "counts": opt["counts"],
                           "scalars": opt.get("scalars", {}), "buffers": sorted(opt["buffers"])})
    arrays.update({f"resume/{k}": v for k, v in resume_arrays.items()})
    return arrays, optimizers


def identity(trainer):
    """What a checkpoint must match to be resumed by `trainer`: its "run" description (trainer, model,
    dataset, parameter-shaping options, as the `tinydgl` command sets `trainer.run_info`; the trainer's
    name when nothing else is known) and the shape of every model and auxiliary array."""
    state = trainer.state_dict()
    shapes = {f"model/{k}": list(v.shape) for k, v in state["model"].items()}
    for name, module_state in state.get("aux", {}).items():
        shapes.update({f"aux/{name}/{k}": list(v.shape) for k, v in module_state.items()})
    run = {"trainer": trainer.name, **getattr(trainer, "run_info", {})}
    return run, shapes


def save_checkpoint(directory, trainer, epoch, history, extra=None, step=0, progress=None):
    """Save the trainer after `epoch` finished epochs and `step` batches of the next one (0: at the
    boundary). progress: the loop's partial-epoch totals (loss sum, samples, seconds), needed to resume
    mid-epoch. The trainer's `resume_state()` (RNG states, buffers, counters) is saved with it. The
    previous checkpoint is kept as previous.json with its arrays; older arrays are removed."""
    os.makedirs(directory, exist_ok=True)
    resume_arrays, resume_values = trainer.resume_state()
    arrays, optimizers = _flatten(trainer.state_dict(), resume_arrays)
    npz_name = f"state-epoch{epoch:04d}.npz" if not step else f"state-epoch{epoch:04d}-step{step:05d}.npz"
    npz_path = os.path.join(directory, npz_name)
    _atomic_write(npz_path, lambda f: np.savez(f, **arrays))
    run, shapes = identity(trainer)
    from .. import __version__

    meta = {
        "format": FORMAT_VERSION,
        "epoch": int(epoch),
        "step": int(step),
        "arrays": npz_name,
        "sha256": _sha256(npz_path),
        "optimizers": optimizers,
        "history": history,
        "progress": progress,
        "trainer_state": resume_values,
        "run": {**run, "tinydgl": __version__},
        "shapes": shapes,
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "extra": extra or {},
    }
    meta["record_sha256"] = _record_sha256(meta)
    latest, previous = (os.path.join(directory, f"{r}.json") for r in RECORDS)
    if _intact(latest, directory) and _read_record(latest)["arrays"] != npz_name:
        _atomic_write(previous, lambda f: f.write(open(latest, "rb").read()))
    _atomic_write(latest, lambda f: f.write(json.dumps(meta, indent=1).encode()))
    kept = {_read_record(p)["arrays"] for p in (latest, previous) if _intact(p, directory)}
    for name in os.listdir(directory):  # arrays no kept record refers to
        if name.startswith("state-epoch") and name.endswith(".npz") and name not in kept:
            os.remove(os.path.join(directory, name))
    return npz_path


def _read_record(path):
    """The JSON record at `path`; raises CheckpointError naming the file if it is not complete JSON."""
    try:
        with open(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not a complete checkpoint record (truncated or corrupted: {err}).") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path} is a folder, not a checkpoint record.") from None


def _check_record(path, directory):
    """The record at `path` if it and its .npz are intact; raises CheckpointError saying what is wrong."""
    meta = _read_record(path)
    if not isinstance(meta, dict) or meta.get("format") not in READABLE_FORMATS:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(f"{path}: checkpoint format {found} is not one tinydgl {READABLE_FORMATS[-1]} reads "
                              f"({', '.join(map(str, READABLE_FORMATS))}).")
    if "record_sha256" in meta and _record_sha256(meta) != meta["record_sha256"]:
        raise CheckpointError(f"{path} does not match its own SHA-256 (recorded {meta['record_sha256'][:12]}..., "
                              f"found {_record_sha256(meta)[:12]}...): the record was changed or damaged.")
    npz_path = os.path.join(directory, meta["arrays"])
    if not os.path.isfile(npz_path):
        raise CheckpointError(f"{path} names {meta['arrays']}, which is missing from {directory}.")
    found = _sha256(npz_path)
    if found != meta["sha256"]:
        raise CheckpointError(f"{npz_path} does not match the SHA-256 recorded in {os.path.basename(path)} "
                              f"(recorded {meta['sha256'][:12]}..., found {found[:12]}...): the file is truncated "
                              f"or corrupted.")
    return meta


def _intact(path, directory):
    if not os.path.exists(path):
        return False
    try:
        _check_record(path, directory)
        return True
    except (CheckpointError, KeyError, OSError):
        return False


def where(meta):
    """'after epoch 3' or 'at epoch 4, batch 120' for messages."""
    step = meta.get("step", 0)
    return f"after epoch {meta['epoch']}" if not step else f"at epoch {meta['epoch'] + 1}, batch {step}"


def check_fits(meta, trainer, path):
    """Refuse a checkpoint written by another kind of run: trainer, model, dataset or parameter-shaping
    options differ, or any array's shape. Raises CheckpointError naming both."""
    if "run" not in meta:  # format 1: nothing recorded; the loader's shape checks still apply
        return
    run, shapes = identity(trainer)
    saved = meta["run"]
    differ = [k for k in ("trainer", "model", "dataset", "optimizer") if k in run and k in saved and run[k] != saved[k]]
    options, saved_options = run.get("options", {}), saved.get("options", {})
    differ += [f"--{k.replace('_', '-')}" for k in sorted(set(options) | set(saved_options))
               if options.get(k) != saved_options.get(k)]

    def describe(r):
        text = f"{r.get('trainer', '?')} on {r.get('model', '?')}" + (f" ({r['dataset']})" if r.get("dataset") else "")
        text += f", {r['optimizer']}" if r.get("optimizer") else ""
        opts = {k: v for k, v in r.get("options", {}).items() if v is not None}
        return text + (" with " + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in sorted(opts.items())) if opts else "")

    if differ:
        names = differ[0] if len(differ) == 1 else ", ".join(differ[:-1]) + " and " + differ[-1]
        raise CheckpointError(f"{path} belongs to another run: it was written by {describe(saved)}; this run is "
                              f"{describe(run)} ({names} differ{'s' if len(differ) == 1 else ''}). Resume with the options it was started "
                              f"with, or choose another --checkpoint-dir.")
    for key in sorted(set(shapes) | set(meta.get("shapes", {}))):
        mine, theirs = shapes.get(key), meta["shapes"].get(key)
        if mine != theirs:
            raise CheckpointError(f"{path} does not fit this model: {key} has shape {theirs} in the checkpoint and "
                                  f"{mine} here (an option that shapes parameters differs). Resume with the options "
                                  f"it was started with, or choose another --checkpoint-dir.")


def load_checkpoint(directory, which="latest", trainer=None):
    """Read a checkpoint: returns (trainer_state, meta); meta["trainer_state"] holds the trainer's resume
    values and trainer_state["resume"] its resume arrays. which: "latest" or "previous" (the one before).
    trainer: refuse the checkpoint (CheckpointError) unless it belongs to a run like this trainer's
    (`check_fits`). Raises CheckpointError if it is missing, corrupted or does not fit."""
    if which not in RECORDS:
        raise CheckpointError(f"which checkpoint: {which!r}; choose one of: {', '.join(RECORDS)}.")
    meta_path = os.path.join(directory, f"{which}.json")
    if not os.path.exists(meta_path):
        if which == "previous":
            raise CheckpointError(f"No previous checkpoint in {directory}: {meta_path} does not exist (a run keeps "
                                  f"one from its second save on).")
        raise CheckpointError(f"No checkpoint to resume from: {meta_path} does not exist. Run without --resume first.")
    try:
        meta = _check_record(meta_path, directory)
    except CheckpointError as err:
        other = os.path.join(directory, "previous.json")
        if which == "latest" and _intact(other, directory):
            raise CheckpointError(f"{err} The previous checkpoint ({where(_read_record(other))}) is intact and kept: "
                                  f"resume from it with --resume previous.") from None
        raise
    if trainer is not None:
        check_fits(meta, trainer, meta_path)
    npz_path = os.path.join(directory, meta["arrays"])
    with np.load(npz_path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    model = {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}
    resume = {k[len("resume/"):]: v for k, v in arrays.items() if k.startswith("resume/")}
    aux = {}
    for key, value in arrays.items():
        if key.startswith("aux/"):
            name, rest = key[len("aux/"):].split("/", 1)
            aux.setdefault(name, {})[rest] = value
    optimizers = []
    for i, opt in enumerate(meta["optimizers"]):
        buffers = {k: arrays[f"optim{i}/{k}"] for k in opt["buffers"]}
        optimizers.append({"lr": opt["lr"], "steps": opt["steps"], "counts": opt["counts"],
                           "scalars": opt.get("scalars", {}), "buffers": buffers})
    meta.setdefault("step", 0)
    if meta.get("format") == 1:  # format 1 kept dropout RNG states under extra
        meta.setdefault("trainer_state", {"dropout_rng": meta.get("extra", {}).get("rng_states", [])})
    return {"model": model, "aux": aux, "optimizers": optimizers, "resume": resume}, meta
