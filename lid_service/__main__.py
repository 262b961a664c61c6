"""`python -m lid_service [serve|train|whisper] ...`"""

from __future__ import annotations

from lidroute.settings import run_subcommand

COMMANDS = {
    "serve": "lid_service.server",
    "train": "lid_service.recipes.ecapa",
    "whisper": "lid_service.recipes.whisper",
}


def main(argv: list[str] | None = None) -> None:
    run_subcommand("lid_service", COMMANDS, argv)


if __name__ == "__main__":
    main()
