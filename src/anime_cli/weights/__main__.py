"""python -m anime_cli.weights SRC [DEST]: install weights (the Makefile's step)."""

import sys
from pathlib import Path

from .install import install

for p in install(sys.argv[1], Path(sys.argv[2]) if len(sys.argv) > 2 else None):
    print(f"installed {p}")
