"""`python -m asr_worker [serve|train|pretrain|finetune|lm|transfer|head|lexicon] ...`"""

from __future__ import annotations

from lidroute.settings import run_subcommand

COMMANDS = {
    "serve": "asr_worker.worker",
    "train": "asr_worker.recipes.ctc",
    "pretrain": "asr_worker.recipes.commands:pretrain_main",
    "finetune": "asr_worker.recipes.commands:finetune_main",
    "lm": "asr_worker.recipes.commands:lm_main",
    "transfer": "asr_worker.recipes.commands:transfer_main",
    "head": "asr_worker.recipes.commands:head_main",
    "lexicon": "asr_worker.recipes.commands:lexicon_main",
}


def main(argv: list[str] | None = None) -> None:
    run_subcommand("asr_worker", COMMANDS, argv)


if __name__ == "__main__":
    main()
