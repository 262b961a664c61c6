"""`python -m lid_service evaluate DATA`: language-ID accuracy and confusion matrices per window.

The same measurement as `lidroute evaluate --no-asr --confusion`, with the windows the model
card reports (0.25, 0.5, 1 and 3 s of speech after the onset the router finds) as defaults.
"""

from __future__ import annotations

import sys

WINDOWS = "0.25,0.5,1,3"


def main(argv: list[str] | None = None) -> None:
    from lidroute.cli import main as lidroute_main

    args = list(sys.argv[1:] if argv is None else argv)
    if "--lid-windows" not in args:
        args += ["--lid-windows", WINDOWS]
    raise SystemExit(lidroute_main(["evaluate", *args, "--no-asr", "--confusion"]))
