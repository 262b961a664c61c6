"""`python -m lid_service serve|train ...`"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    command, rest = (args[0], args[1:]) if args and not args[0].startswith("-") else ("serve", args)
    if command == "serve":
        from lid_service.server import main as serve_main

        serve_main(rest)
    elif command == "train":
        from lid_service.training import main as train_main

        train_main(rest)
    else:
        raise SystemExit(f"unknown command {command!r}; use: serve, train")


if __name__ == "__main__":
    main()
