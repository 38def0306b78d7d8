"""Checkpoints that survive a crash at any moment, know what run they belong to, and are checked on resume.

Arrays go in `.npz` (state-epoch0003.npz, state-epoch0003-step00120.npz), everything else in JSON, no
pickle: latest.json is the newest checkpoint's record (position, history, RNG states, the run it belongs
to, every array's shape, SHA-256 checksums), previous.json the one before it, lock.json the run writing
here (`CheckpointLock`). Every file is written under a temporary name, flushed, then renamed; the rename of
latest.json is the commit point. A damaged file is refused by name on resume (`which="previous"` still
loads); a failed write raises `CheckpointWriteError` and leaves the previous checkpoint intact.

Design notes (the layout, atomic writes, locks): docs/design/checkpoints.md.
"""

import contextlib
import errno
import hashlib
import json
import os
import socket
import sys
import tempfile
import time

import numpy as np

FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)  # format 1 (before 2026-12): epoch-boundary checkpoints without "run"/"shapes"
RECORDS = ("latest", "previous")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupted or does not belong to this run."""


class CheckpointWriteError(CheckpointError):
    """A checkpoint could not be written (a full disk, a quota, an I/O error); the one before it is intact."""


class CheckpointLocked(CheckpointError):
    """Another run is writing checkpoints to the same folder."""


def _atomic_write(path, write):
    """Call write(file) on a temporary file in path's directory, fsync it, then rename it to path (and fsync
    the folder, so the rename itself survives a power cut). On any failure the temporary file is removed
    and `path` is untouched."""
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
    _fsync_folder(directory)


def _fsync_folder(directory):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems cannot fsync a folder; the rename is still atomic
        pass
    finally:
        os.close(fd)


def describe_os_error(err):
    """'the disk is full (No space left on device)' and the like: an OSError in words, for messages."""
    reason = err.strerror or str(err)
    if err.errno == errno.ENOSPC:
        return f"the disk is full ({reason})"
    if err.errno == errno.EDQUOT:
        return f"the disk quota is used up ({reason})"
    return reason


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
        optimizers.append(
            {
                "lr": opt["lr"],
                "steps": opt["steps"],
                "counts": opt["counts"],
                "scalars": opt.get("scalars", {}),
                "buffers": sorted(opt["buffers"]),
            }
        )
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
    previous checkpoint is kept as previous.json with its arrays; older arrays are removed.

    Raises CheckpointWriteError when the disk refuses a write (full, over quota, an I/O error), after
    removing what this save had written: the checkpoint before it stays the latest, intact. Training
    should stop then (the `tinydgl` command does): a run that goes on without checkpoints would lose
    everything since the last one to the next crash, while stopping loses nothing that `--resume` cannot
    redo exactly, once there is space."""
    npz_name = f"state-epoch{epoch:04d}.npz" if not step else f"state-epoch{epoch:04d}-step{step:05d}.npz"
    try:
        return _save(directory, trainer, epoch, history, extra, step, progress, npz_name)
    except OSError as err:
        latest = os.path.join(directory, "latest.json")
        kept = _read_record(latest)["arrays"] if _intact(latest, directory) else None
        npz_path = os.path.join(directory, npz_name)
        if kept != npz_name and os.path.exists(npz_path):
            os.remove(npz_path)  # this save's arrays, which no record refers to
        this = where({"epoch": epoch, "step": step})
        before = (
            f"The checkpoint {where(_read_record(latest))} is intact there and stays the latest."
            if kept
            else "No earlier checkpoint is there."
        )
        full = err.errno in (errno.ENOSPC, errno.EDQUOT)
        fix = "free some space" if full else f"once {directory} can be written again"
        again = "run the same command with --resume to continue from it" if kept else "run the same command again"
        raise CheckpointWriteError(
            f"Could not write the checkpoint {this} to {directory}: {describe_os_error(err)}. "
            f"{before} Training stopped: {fix}, then {again}."
        ) from err


def _save(directory, trainer, epoch, history, extra, step, progress, npz_name):
    os.makedirs(directory, exist_ok=True)
    resume_arrays, resume_values = trainer.resume_state()
    arrays, optimizers = _flatten(trainer.state_dict(), resume_arrays)
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
        raise CheckpointError(
            f"{path}: checkpoint format {found} is not one tinydgl {READABLE_FORMATS[-1]} reads "
            f"({', '.join(map(str, READABLE_FORMATS))})."
        )
    if "record_sha256" in meta and _record_sha256(meta) != meta["record_sha256"]:
        raise CheckpointError(
            f"{path} does not match its own SHA-256 (recorded {meta['record_sha256'][:12]}..., "
            f"found {_record_sha256(meta)[:12]}...): the record was changed or damaged."
        )
    npz_path = os.path.join(directory, meta["arrays"])
    if not os.path.isfile(npz_path):
        raise CheckpointError(f"{path} names {meta['arrays']}, which is missing from {directory}.")
    found = _sha256(npz_path)
    if found != meta["sha256"]:
        raise CheckpointError(
            f"{npz_path} does not match the SHA-256 recorded in {os.path.basename(path)} "
            f"(recorded {meta['sha256'][:12]}..., found {found[:12]}...): the file is truncated "
            f"or corrupted."
        )
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
    differ += [
        f"--{k.replace('_', '-')}"
        for k in sorted(set(options) | set(saved_options))
        if options.get(k) != saved_options.get(k)
    ]

    def describe(r):
        text = f"{r.get('trainer', '?')} on {r.get('model', '?')}" + (f" ({r['dataset']})" if r.get("dataset") else "")
        text += f", {r['optimizer']}" if r.get("optimizer") else ""
        opts = {k: v for k, v in r.get("options", {}).items() if v is not None}
        return text + (
            " with " + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in sorted(opts.items())) if opts else ""
        )

    if differ:
        names = differ[0] if len(differ) == 1 else ", ".join(differ[:-1]) + " and " + differ[-1]
        raise CheckpointError(
            f"{path} belongs to another run: it was written by {describe(saved)}; this run is "
            f"{describe(run)} ({names} differ{'s' if len(differ) == 1 else ''}). Resume with the options it was started "
            f"with, or choose another --checkpoint-dir."
        )
    for key in sorted(set(shapes) | set(meta.get("shapes", {}))):
        mine, theirs = shapes.get(key), meta["shapes"].get(key)
        if mine != theirs:
            raise CheckpointError(
                f"{path} does not fit this model: {key} has shape {theirs} in the checkpoint and "
                f"{mine} here (an option that shapes parameters differs). Resume with the options "
                f"it was started with, or choose another --checkpoint-dir."
            )


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
            raise CheckpointError(
                f"No previous checkpoint in {directory}: {meta_path} does not exist (a run keeps "
                f"one from its second save on)."
            )
        raise CheckpointError(f"No checkpoint to resume from: {meta_path} does not exist. Run without --resume first.")
    try:
        meta = _check_record(meta_path, directory)
    except CheckpointError as err:
        other = os.path.join(directory, "previous.json")
        if which == "latest" and _intact(other, directory):
            raise CheckpointError(
                f"{err} The previous checkpoint ({where(_read_record(other))}) is intact and kept: "
                f"resume from it with --resume previous."
            ) from None
        raise
    if trainer is not None:
        check_fits(meta, trainer, meta_path)
    npz_path = os.path.join(directory, meta["arrays"])
    with np.load(npz_path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    model = {k[len("model/") :]: v for k, v in arrays.items() if k.startswith("model/")}
    resume = {k[len("resume/") :]: v for k, v in arrays.items() if k.startswith("resume/")}
    aux = {}
    for key, value in arrays.items():
        if key.startswith("aux/"):
            name, rest = key[len("aux/") :].split("/", 1)
            aux.setdefault(name, {})[rest] = value
    optimizers = []
    for i, opt in enumerate(meta["optimizers"]):
        buffers = {k: arrays[f"optim{i}/{k}"] for k in opt["buffers"]}
        optimizers.append(
            {
                "lr": opt["lr"],
                "steps": opt["steps"],
                "counts": opt["counts"],
                "scalars": opt.get("scalars", {}),
                "buffers": buffers,
            }
        )
    meta.setdefault("step", 0)
    if meta.get("format") == 1:  # format 1 kept dropout RNG states under extra
        meta.setdefault("trainer_state", {"dropout_rng": meta.get("extra", {}).get("rng_states", [])})
    return {"model": model, "aux": aux, "optimizers": optimizers, "resume": resume}, meta


# --- one run per checkpoint folder ---------------------------------------------------------------------
LOCK_NAME = "lock.json"


def _command_line():
    """How this process was started, for the lock's record: 'tinydgl train --trainer bp ...'."""
    import shlex

    argv = list(sys.argv)
    if argv and (os.path.basename(argv[0]) in ("tinydgl", "__main__.py") or argv[0] == "-m"):
        argv[0] = "tinydgl"
    return shlex.join(argv)


def _read_owner(fd):
    """The record in an open lock file (a dict), or None if it is empty or not complete JSON."""
    try:
        text = os.pread(fd, 1 << 16, 0)
        owner = json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None


def _describe_owner(owner):
    if not owner:
        return "a run that is just starting (it has not written its details yet)"
    run = f" ({owner['run']})" if owner.get("run") else ""
    return (
        f"pid {owner.get('pid', '?')} on host {owner.get('host', '?')}, started {owner.get('started', '?')}: "
        f"{owner.get('command', '?')}{run}"
    )


def _locked_message(directory, owner):
    stop = f" (kill {owner['pid']})" if owner and owner.get("host") == socket.gethostname() and owner.get("pid") else ""
    return (
        f"{directory} is in use by another run: {_describe_owner(owner)}. Two runs writing one checkpoint "
        f"folder overwrite each other's checkpoints. Wait for that run to end, stop it{stop}, or give this run "
        f"another --checkpoint-dir; nothing was trained."
    )


def _pid_running(pid):
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError, OverflowError):
        return True
    return True


class CheckpointLock:
    """Context manager: hold a checkpoint folder for one run while it writes there; a second run that asks
    for it is refused with `CheckpointLocked`, whose message names the first (pid, host, command, start).

        with CheckpointLock("ckpt", run="bp on cnn (mnist-small)"):
            ...train, save_checkpoint("ckpt", ...)...

    An exclusive `flock` on DIR/lock.json, which the kernel drops however the process ends; where locks are
    not available, the run goes on unlocked, with a note. Why flock: docs/design/checkpoints.md.
    """

    def __init__(self, directory, run=None, log=print):
        self.directory, self.path, self.log, self._fd = directory, os.path.join(directory, LOCK_NAME), log, None
        self.owner = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": _command_line(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "run": run,
        }

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()

    def acquire(self):
        try:
            import fcntl
        except ImportError:
            self.log(f"note: cannot lock {self.directory} on this system; make sure no other run writes there.")
            return
        while True:
            try:
                os.makedirs(self.directory, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:
                raise CheckpointWriteError(
                    f"Cannot write checkpoints to {self.directory}: {describe_os_error(err)}; nothing was trained."
                ) from err
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _read_owner(fd)
                os.close(fd)
                raise CheckpointLocked(_locked_message(self.directory, owner)) from None
            except OSError as err:  # e.g. ENOLCK: this filesystem has no locks
                os.close(fd)
                self.log(f"note: cannot lock {self.directory} ({err.strerror}); make sure no other run writes there.")
                return
            # A run that ends removes the file while it still holds it; if that happened between our open and
            # our flock, we hold a file nobody else will open: open the path again.
            try:
                mine, now = os.fstat(fd), os.stat(self.path)
                if (mine.st_dev, mine.st_ino) == (now.st_dev, now.st_ino):
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        left = _read_owner(fd)
        if left:
            gone = (
                "which is no longer running"
                if left.get("host") == socket.gethostname() and not _pid_running(left.get("pid"))
                else "which no longer holds it"
            )
            self.log(
                f"note: {self.path} was left by {_describe_owner(left)}, {gone} (it was killed or crashed); "
                f"this run takes the folder over."
            )
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(self.owner, indent=1).encode(), 0)
        except OSError:  # a full disk: the lock holds without its record; saving will say what is wrong
            pass
        self._fd = fd

    def release(self):
        """Give the folder up (removes lock.json while still holding it; see acquire). Safe to call twice."""
        if self._fd is None:
            return
        try:
            os.remove(self.path)
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None


def hold_folder(checkpoint_dir, trainer, log=print):
    """A `CheckpointLock` on checkpoint_dir, its record naming the trainer's run (a no-op without a folder):
    what `tinydgl.train.fit` and the parallel engines' `epochs_on_workers` hold while they train."""
    if not checkpoint_dir:
        return contextlib.nullcontext()
    run, name = getattr(trainer, "run_info", {}), getattr(trainer, "name", None)
    described = f"{run.get('trainer', name)} on {run['model']} ({run['dataset']})" if "model" in run else name
    return CheckpointLock(checkpoint_dir, run=described, log=log)


def check_unlocked(directory):
    """Raise CheckpointLocked if a run holds `directory` now: a check before a run starts loading data
    (`CheckpointLock` is what holds it while the run trains). No folder (None): nothing to check."""
    if not directory:
        return
    try:
        import fcntl

        fd = os.open(os.path.join(directory, LOCK_NAME), os.O_RDONLY)
    except (ImportError, OSError):  # no lock file: nobody holds the folder
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise CheckpointLocked(_locked_message(directory, _read_owner(fd))) from None
    except OSError:
        pass
    finally:
        os.close(fd)


def last_checkpoint_note(directory):
    """For messages after a failure: where the last good checkpoint in `directory` is, or that there is
    none ("" when no directory was given)."""
    if not directory:
        return ""
    latest = os.path.join(directory, "latest.json")
    if _intact(latest, directory):
        return f"the last good checkpoint ({where(_read_record(latest))}) is in {directory}"
    return f"no checkpoint was written to {directory}"
