"""`python -m asr_worker [serve|train] ...`"""

from __future__ import annotations

from lidroute.settings import run_subcommand

COMMANDS = {"serve": "asr_worker.worker", "train": "asr_worker.training"}


def main(argv: list[str] | None = None) -> None:
    run_subcommand("asr_worker", COMMANDS, argv)


if __name__ == "__main__":
    main()
