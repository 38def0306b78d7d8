"""Reading IDX files, the format of MNIST and Fashion-MNIST, gzipped or not.

The format (http://yann.lecun.com/exdb/mnist/, bottom of the page) is a 4-byte magic number

    0x00 0x00 <type code> <number of dimensions>

then one big-endian uint32 per dimension, then the values in C order, big-endian. MNIST's images are
``00 00 08 03`` (uint8, 3 dims: N, 28, 28) and its labels ``00 00 08 01`` (uint8, N).

Every check here raises `IdxFormatError` naming the file and the check, so a truncated download or a file
of another format is never parsed into garbage.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from .errors import IdxFormatError

# Type code -> dtype, from the format description. All multi-byte types are big-endian.
IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
GZIP_MAGIC = b"\x1f\x8b"


def decompress_if_gzip(data: bytes, source="<bytes>") -> bytes:
    """Return `data` gunzipped if it starts with the gzip magic (whatever the file is called), else as is.

    gzip's own CRC-32 and length trailer catch a corrupted or truncated .gz; we turn its errors into one that
    names the file.
    """
    if not data.startswith(GZIP_MAGIC):
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as err:  # BadGzipFile is an OSError; a cut-off stream is EOFError
        raise IdxFormatError(source, "gzip decompression", f"{err} (the file is corrupted or truncated)") from err


def parse_idx(data: bytes, source="<bytes>") -> np.ndarray:
    """Parse the bytes of an (uncompressed) IDX file into an array of its shape, in native byte order."""
    if len(data) < 4:
        raise IdxFormatError(source, "IDX header", f"the file has only {len(data)} bytes, fewer than the 4-byte magic")
    zero0, zero1, type_code, ndim = data[:4]
    if zero0 != 0 or zero1 != 0 or type_code not in IDX_DTYPES or ndim == 0:
        raise IdxFormatError(
            source,
            "IDX magic number",
            f"expected 00 00 <type in {{{', '.join(f'{t:02x}' for t in IDX_DTYPES)}}}> <ndim >= 1>, "
            f"got {data[:4].hex(' ')} (not an IDX file)",
        )
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise IdxFormatError(
            source, "IDX header", f"{ndim} dimensions need a {header_size}-byte header, the file has {len(data)} bytes"
        )
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    payload = len(data) - header_size
    if payload != expected:
        what = "truncated" if payload < expected else "has trailing bytes"
        raise IdxFormatError(
            source,
            "IDX size",
            f"the header says shape {shape} ({expected} bytes of data) but the file has {payload}: {what}",
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_size).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True)  # own, writable, native-endian memory


def read_idx(path) -> np.ndarray:
    """Read an IDX file from disk; gzip is detected from the content, not the file name."""
    path = Path(path)
    return parse_idx(decompress_if_gzip(path.read_bytes(), path), path)


def write_idx(path, array, compress=None) -> Path:
    """Write `array` as an IDX file (gzipped when `compress`, default: when the name ends in .gz).

    Used by the tests to make small files in the real format, and handy for exporting subsets.
    """
    path = Path(path)
    array = np.asarray(array)
    codes = {dtype.newbyteorder("="): code for code, dtype in IDX_DTYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        raise ValueError(
            f"IDX cannot store dtype {array.dtype}; use one of uint8, int8, int16, int32, float32, float64."
        )
    code = codes[native]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    data = header + array.astype(IDX_DTYPES[code], copy=False).tobytes()
    if compress is None:
        compress = path.suffix == ".gz"
    path.write_bytes(gzip.compress(data, mtime=0) if compress else data)
    return path
