"""`python -m lid_service [serve|train] ...`"""

from __future__ import annotations

from lidroute.settings import run_subcommand

COMMANDS = {
    "serve": "lid_service.server",
    "train": "lid_service.recipes.ecapa",
}


def main(argv: list[str] | None = None) -> None:
    run_subcommand("lid_service", COMMANDS, argv)


if __name__ == "__main__":
    main()
