"""The hand-written ops: one file per idea, each op a `*_forward` / `*_backward` pair (CS231n style).

Import them through `tinydgl.functional` (``from tinydgl import functional as F``).
"""

from typing import Any

# What an op's forward returns beside its output and its backward (and jvp) takes back: the op's own tuple of
# saved arrays and settings, opaque to the caller, passed back unchanged.
Cache = Any
