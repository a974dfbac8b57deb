"""Prints the Makefile's TRAIN_ARGS, expanded: the arguments `make train` gives
`python -m model.train` (besides --models-root).

The image build trains its bundled model with them, so the Makefile stays the
one place they are written. No make in the image: this reads the Makefile's
top-level `NAME ?= value` / `NAME := value` / `NAME = value` lines and expands
`$(NAME)` references, which is all TRAIN_ARGS uses (tests/deploy checks the
result against make's own expansion).

    python docker/train_args.py [Makefile]
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ASSIGNMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*(?:\?|:)?=\s*(.*?)\s*$")
REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def variables(makefile: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in makefile.splitlines():
        match = ASSIGNMENT.match(line)
        if match:
            found[match.group(1)] = match.group(2).split(" #", 1)[0].strip()
    return found


def expand(value: str, names: dict[str, str], depth: int = 0) -> str:
    if depth > 10:
        raise ValueError(f"Makefile variable expansion too deep: {value!r}")
    return REFERENCE.sub(lambda m: expand(names.get(m.group(1), ""), names, depth + 1), value)


def train_args(makefile: str) -> str:
    names = variables(makefile)
    if "TRAIN_ARGS" not in names:
        raise SystemExit("no TRAIN_ARGS in the Makefile")
    return expand(names["TRAIN_ARGS"], names)


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "Makefile")
    print(train_args(path.read_text()))
