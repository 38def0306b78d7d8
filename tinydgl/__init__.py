"""tinydgl: deep networks that learn without end-to-end backpropagation, written out in NumPy/CuPy.

import tinydgl
from tinydgl import functional as F
tinydgl.set_backend("numpy")   # or "cupy" on an NVIDIA GPU
"""

from . import functional
from .backend import get_backend, set_backend, to_numpy, use_backend
from .threads import num_threads, set_num_threads

__version__ = "0.1.0"
__all__ = [
    "functional",
    "get_backend",
    "num_threads",
    "set_backend",
    "set_num_threads",
    "to_numpy",
    "use_backend",
    "__version__",
]
