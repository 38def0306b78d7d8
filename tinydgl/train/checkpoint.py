"""Checkpoints that survive a crash at any moment: arrays in `.npz`, everything else in JSON, no pickle.

Layout of a checkpoint directory:

    state-epoch0003.npz   model parameters/buffers and optimizer buffers (np.savez, allow_pickle=False)
    latest.json           epoch, history, RNG states, optimizer scalars (Python floats, written by `json` with
                          enough digits to read back exactly), config, and which .npz to load

Writing is atomic: each file is written under a temporary name, flushed to disk, then renamed. The rename
of `latest.json` is the commit point, so a run killed at any moment leaves either the previous complete
checkpoint or the new complete one, never a half-written one.
"""
import hashlib
import json
import os
import tempfile

import numpy as np

FORMAT_VERSION = 1


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


def _flatten(trainer_state):
    """Split a trainer state into arrays (for the .npz) and JSON-able scalars."""
    arrays = {f"model/{k}": v for k, v in trainer_state["model"].items()}
    for name, state in trainer_state.get("aux", {}).items():
        arrays.update({f"aux/{name}/{k}": v for k, v in state.items()})
    optimizers = []
    for i, opt in enumerate(trainer_state["optimizers"]):
        arrays.update({f"optim{i}/{k}": v for k, v in opt["buffers"].items()})
        optimizers.append({"lr": opt["lr"], "steps": opt["steps"], "counts": opt["counts"],
                           "scalars": opt.get("scalars", {}), "buffers": sorted(opt["buffers"])})
    return arrays, optimizers


def save_checkpoint(directory, trainer, epoch, history, extra=None):
    """Save the trainer after `epoch` epochs (1-based count of finished epochs)."""
    os.makedirs(directory, exist_ok=True)
    arrays, optimizers = _flatten(trainer.state_dict())
    npz_name = f"state-epoch{epoch:04d}.npz"
    npz_path = os.path.join(directory, npz_name)
    _atomic_write(npz_path, lambda f: np.savez(f, **arrays))
    meta = {
        "format": FORMAT_VERSION,
        "epoch": epoch,
        "arrays": npz_name,
        "sha256": _sha256(npz_path),
        "optimizers": optimizers,
        "history": history,
        "extra": extra or {},
    }
    _atomic_write(os.path.join(directory, "latest.json"), lambda f: f.write(json.dumps(meta, indent=1).encode()))
    for name in os.listdir(directory):  # older array files are no longer referenced
        if name.startswith("state-epoch") and name.endswith(".npz") and name != npz_name:
            os.remove(os.path.join(directory, name))
    return npz_path


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupted or does not fit the model."""


def load_checkpoint(directory):
    """Read the latest checkpoint: returns (trainer_state, meta). Raises CheckpointError if it is unusable."""
    meta_path = os.path.join(directory, "latest.json")
    if not os.path.exists(meta_path):
        raise CheckpointError(f"No checkpoint to resume from: {meta_path} does not exist. Run without --resume first.")
    with open(meta_path) as f:
        meta = json.load(f)
    if meta.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{meta_path}: checkpoint format {meta.get('format')} is not {FORMAT_VERSION}.")
    npz_path = os.path.join(directory, meta["arrays"])
    if not os.path.exists(npz_path):
        raise CheckpointError(f"{meta_path} names {meta['arrays']}, which is missing.")
    if _sha256(npz_path) != meta["sha256"]:
        raise CheckpointError(f"{npz_path} does not match the SHA-256 recorded in latest.json: the file is corrupted.")
    with np.load(npz_path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    model = {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}
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
    return {"model": model, "aux": aux, "optimizers": optimizers}, meta
