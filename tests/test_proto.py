"""The committed gRPC stubs are exactly what `make proto` generates from proto/."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from gen_proto import generate  # noqa: E402


def test_generated_stubs_match_the_proto_files(tmp_path: Path) -> None:
    generate(tmp_path)
    fresh = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*.py*")}
    assert fresh, "protoc generated nothing"
    for rel, content in fresh.items():
        committed = ROOT / rel
        assert committed.exists(), f"{rel} is missing: run `make proto`"
        assert committed.read_bytes() == content, f"{rel} is stale: run `make proto`"
