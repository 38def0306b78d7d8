"""Writing what a run computed (the metrics JSON, the plots) at its end, so that a failure there loses
nothing: the command checks before training that it can write each path, but a disk can fill up while it
trains.

    outputs = Outputs()
    outputs.write_json("metrics", "runs/m.json", summary)
    outputs.write_file("learning curves", "runs/m.png", lambda path: plot_history(histories, path))
    outputs.finish()          # raises OutputError if anything went elsewhere

Each file is written under a temporary name beside it, flushed to disk, then renamed, so a path holds the
complete file or nothing (and no `.tmp` is left behind). When the disk refuses a write (full, over quota,
read-only now), the file goes to a new folder in the system's temporary directory instead and its path is
printed; if that fails too, the metrics are printed on stdout. `finish` then raises `OutputError`: the
results are safe, but not where they were asked for, so a script that reads them must not carry on.
"""

import json
import os
import tempfile

from .checkpoint import describe_os_error


class OutputError(RuntimeError):
    """An output could not be written where asked; its message says where it went instead."""


def atomic_write(path, write):
    """Call write(tmp_path) to make the file under a temporary name in path's folder (the same extension,
    which matplotlib reads the format from), fsync it and rename it to path. On failure the temporary file
    is removed and the error raised; path is untouched."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix="-" + os.path.basename(path))
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def json_writer(data):
    """A write(path) function for `atomic_write` that writes data as indented JSON."""

    def write(path):
        with open(path, "w") as f:
            json.dump(data, f, indent=2)

    return write


def write_json(path, data):
    """Write data as indented JSON to path, atomically (`atomic_write`)."""
    atomic_write(path, json_writer(data))


class Outputs:
    """The files a command writes at its end (module docstring). log: where the 'written to' lines go."""

    def __init__(self, log=print):
        self.log, self.problems, self._fallback = log, [], None

    def write_json(self, what, path, data):
        if not self.write_file(what, path, json_writer(data)):
            # nowhere to write: print it, so what was computed is not lost
            print(f"--- {what} (could not be saved anywhere; here they are) ---\n{json.dumps(data, indent=2)}")

    def write_file(self, what, path, write):
        """Write one output with write(path); returns the path it went to, or None if none took it."""
        try:
            atomic_write(path, write)
            self.log(f"{what} written to {path}")
            return path
        except OSError as err:
            reason = describe_os_error(err)
        try:
            if self._fallback is None:
                self._fallback = tempfile.mkdtemp(prefix="tinydgl-results-")
            elsewhere = os.path.join(self._fallback, os.path.basename(path))
            atomic_write(elsewhere, write)
        except OSError as err:
            if self._fallback and not os.listdir(self._fallback):
                os.rmdir(self._fallback)  # no empty folder left behind
                self._fallback = None
            self.problems.append(
                f"could not write the {what} to {path} ({reason}), nor to the temporary "
                f"folder ({describe_os_error(err)})"
            )
            return None
        self.problems.append(f"could not write the {what} to {path} ({reason}); saved to {elsewhere} instead")
        return elsewhere

    def finish(self):
        """Raise OutputError if any output did not go where it was asked for."""
        if self.problems:
            raise OutputError("; ".join(self.problems) + ". Free some space, or give another path next time.")
