"""The hand-written ops: one file per idea, each op a `*_forward` / `*_backward` pair (CS231n style).

Import them through `tinydgl.functional` (``from tinydgl import functional as F``).
"""
