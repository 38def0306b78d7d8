"""The errors the data package raises, so callers (and the CLI) can catch exactly these.

Two kinds of failure, two kinds of message:

- the data is *not there* (`DatasetNotFoundError`): say which files are expected, where we looked, where to
  put them and how to get them;
- the data is there but *wrong* (`DataFileError` and its subclasses): name the file and the check that failed.
  A file that fails a check is never used.
"""

from __future__ import annotations


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are neither on disk nor downloadable right now. The message says what to do."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class DataFileError(ValueError):
    """A data file exists but failed a check; `path` is the file and `check` names the check that failed."""

    def __init__(self, path, check: str, detail: str):
        self.path, self.check, self.detail = str(path), check, detail
        super().__init__(f"{self.path}: {check} failed: {detail}")


class IdxFormatError(DataFileError):
    """An IDX file (MNIST, Fashion-MNIST) is truncated, has a bad header, or is not gzip-readable."""


class CifarFormatError(DataFileError):
    """A CIFAR-10 binary archive or batch file is truncated, incomplete or holds bad records."""


class ChecksumError(DataFileError):
    """A file's SHA-256 is not the published one: it is corrupted, truncated, or a different file."""


class DownloadError(OSError):
    """Every mirror for a file failed (or the network is switched off); the message lists each attempt."""
