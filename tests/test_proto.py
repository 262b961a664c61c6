"""The committed gRPC stubs are exactly what `make proto` generates from proto/."""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from gen_proto import generate  # noqa: E402
from lock import LOCK, parse_lock  # noqa: E402


def test_generated_stubs_match_the_proto_files(tmp_path: Path) -> None:
    # Another protoc writes other bytes: compare only with the locked one, or the message misleads.
    locked = parse_lock(LOCK.read_text())["grpcio-tools"].version
    installed = metadata.version("grpcio-tools")
    assert installed == locked, f"grpcio-tools {installed} is installed, {locked} locked: run `make setup`"
    generate(tmp_path)
    fresh = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*.py*")}
    assert fresh, "protoc generated nothing"
    for rel, content in fresh.items():
        committed = ROOT / rel
        assert committed.exists(), f"{rel} is missing: run `make proto`"
        assert committed.read_bytes() == content, f"{rel} is stale: run `make proto`"


def test_pyproject_admits_no_grpcio_or_protobuf_older_than_the_stubs_need() -> None:
    """The stubs refuse at import a grpcio or protobuf older than the generator's: the ranges say so."""
    from lock import project_requirements
    from packaging.version import Version

    stub = (ROOT / "lidroute" / "v1" / "transcriber_pb2.py").read_text()
    grpc_stub = (ROOT / "lidroute" / "v1" / "transcriber_pb2_grpc.py").read_text()
    needs = {
        "protobuf": Version(re.search(r"# Protobuf Python Version: ([\d.]+)", stub)[1]),
        "grpcio": Version(re.search(r"GRPC_GENERATED_VERSION = '([\d.]+)'", grpc_stub)[1]),
    }
    runtime, _ = project_requirements()
    checked = [req for req in runtime if req.name in needs]
    assert {req.name for req in checked} == set(needs)
    for req in checked:
        floors = [Version(s.version) for s in req.specifier if s.operator in (">=", "==", "~=")]
        assert floors and min(floors) >= needs[req.name], (
            f"pyproject.toml admits {req.name} {req.specifier}; the stubs need >= {needs[req.name]}"
        )
