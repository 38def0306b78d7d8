"""`python -m tinydgl ...` is the same as the `tinydgl` command."""

import sys

from .cli import main

sys.exit(main())
