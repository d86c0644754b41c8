"""Pages of the documentation generated from the code (the configuration reference from
the schema, the metrics reference from the collectors), so that the code is their one
source: the command line both generators share, to print a page, write it, or check
that the committed page is what the code generates (`make docs` does, and fails if not).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path


def page_main(
    module: str, source: str, path: Path, render: Callable[[], str], argv: Sequence[str] | None
) -> int:
    """`python -m MODULE [--write [FILE] | --check [FILE]]` for the page at `path` (from the
    repository's root) that `render` makes from `source`; the exit code."""
    parser = argparse.ArgumentParser(
        prog=f"python -m {module}", description=f"Print the page generated from {source}."
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--write", nargs="?", const=path, type=Path, metavar="FILE",
                       help=f"write it to FILE (default: {path})")
    where.add_argument("--check", nargs="?", const=path, type=Path, metavar="FILE",
                       help=f"exit 1 unless FILE (default: {path}) is what it would write")
    args = parser.parse_args(argv)
    text = render()
    if args.write:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(text, encoding="utf-8")
    elif args.check:
        current = args.check.read_text(encoding="utf-8") if args.check.is_file() else None
        if current != text:
            print(f"{args.check} differs from the page generated from {source}: run "
                  f"python -m {module} --write", file=sys.stderr)
            return 1
    else:
        sys.stdout.write(text)
    return 0
