"""Downloading a data file safely: verified, atomic, with mirror failover.

`download(remote, folder)` tries each of the file's mirrors in turn. For each it streams the response into a
temporary file *in the destination folder* while hashing it, and only when the byte count and SHA-256 match
the published ones does it rename the temporary file to its final name (`os.replace`, atomic on one
filesystem). So a file under its final name is always complete and verified; an interrupted or corrupted
transfer leaves nothing behind (the temporary file is deleted) and the next mirror is tried.

Set ``TINYDGL_OFFLINE=1`` (or pass ``offline=True``) to never touch the network.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .errors import ChecksumError, DownloadError

CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class RemoteFile:
    """One published data file: its name, SHA-256, size in bytes, and the mirrors that serve it.

    `raw_sha256` / `raw_size`, when known, describe the *decompressed* content of a .gz file, so a copy that
    was re-compressed (Debian's packages are) or gunzipped can still be verified.
    """

    filename: str
    sha256: str
    size: int | None
    urls: tuple[str, ...]
    raw_sha256: str | None = None
    raw_size: int | None = None


def is_offline() -> bool:
    """True when the environment says never to use the network (``TINYDGL_OFFLINE=1``)."""
    return os.environ.get("TINYDGL_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


class _Progress:
    """tqdm's bar when tqdm is installed (it is optional), else a line every 10%."""

    def __init__(self, total, label, enabled):
        self.total, self.label, self.enabled, self.done, self.next_report = total, label, enabled, 0, 0.1
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label, leave=False)
            except ImportError:
                print(f"downloading {label} ({_megabytes(total)})", file=sys.stderr, flush=True)

    def update(self, n):
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled and self.total and self.done >= self.next_report * self.total:
            print(f"  {self.label}: {100 * self.done // self.total}%", file=sys.stderr, flush=True)
            self.next_report += 0.1

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _megabytes(n):
    return "unknown size" if not n else f"{n / 1e6:.1f} MB"


def _fetch_one(url, remote: RemoteFile, folder: Path, progress: bool, timeout: float) -> Path:
    """Download `url` into `folder/remote.filename`, verified; raise on any failure, leaving no file behind."""
    target = folder / remote.filename
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{remote.filename}.", suffix=".part")
    try:
        digest = hashlib.sha256()
        received = 0
        request = urllib.request.Request(url, headers={"User-Agent": "tinydgl"})
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as response:
            announced = response.headers.get("Content-Length")
            announced = int(announced) if announced and announced.isdigit() else None
            bar = _Progress(announced or remote.size, remote.filename, progress)
            try:
                while chunk := response.read(CHUNK_BYTES):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            finally:
                bar.close()
        # http.client does not raise when a server closes the connection early: count the bytes ourselves.
        if announced is not None and received != announced:
            raise DownloadError(f"the transfer was interrupted after {received} of {announced} bytes")
        if remote.size is not None and received != remote.size:
            raise ChecksumError(url, "size", f"expected {remote.size} bytes, received {received}")
        if digest.hexdigest() != remote.sha256:
            raise ChecksumError(url, "SHA-256", f"expected {remote.sha256}, got {digest.hexdigest()}")
        os.replace(temporary, target)
        return target
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def download(remote: RemoteFile, folder, *, progress=True, timeout=60.0, offline=None) -> Path:
    """Download `remote` into `folder` (created if needed), trying its mirrors in order. Returns the path.

    Raises `DownloadError`, listing each mirror and why it failed, when none worked or when offline
    (`offline=None` reads ``TINYDGL_OFFLINE``).
    """
    if offline is None:
        offline = is_offline()
    if offline:
        raise DownloadError(f"not downloading {remote.filename}: offline mode (TINYDGL_OFFLINE=1)")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    failures = []
    for url in remote.urls:
        try:
            return _fetch_one(url, remote, folder, progress, timeout)
        except urllib.error.HTTPError as err:
            failures.append(f"{url}: HTTP {err.code} {err.reason}")
        except urllib.error.URLError as err:
            failures.append(f"{url}: {err.reason}")
        except ChecksumError as err:
            failures.append(f"{url}: {err.check} check failed: {err.detail}")
        except DownloadError as err:
            failures.append(f"{url}: {err}")
        except (OSError, http.client.HTTPException) as err:  # reset, timeout, IncompleteRead, disk full, ...
            failures.append(f"{url}: {type(err).__name__}: {err}")
    raise DownloadError(f"could not download {remote.filename}; every mirror failed:\n  " + "\n  ".join(failures))
