"""Writes the settings part of the Helm chart's values.schema.json from the services' settings classes.

The chart turns `settings:` maps in values into LIDROUTE_* variables. Generating their schema from
the pydantic classes means a misspelt setting, or a value the service would refuse at start
(`lid_threshold: 2`), fails at `helm install` instead, with the setting's own description. Settings
that the chart wires itself (addresses, ports, the REST gateway's listen host, the Redis URL, a
pool's languages, the per-pod worker id, the TLS and tokens files in the Secrets it mounts and the
gateway's TLS to the router) are left out, so values cannot contradict the wiring.
tests/test_deploy.py fails when the committed schema differs from what this produces:

    .venv/bin/python scripts/deploy_settings_schema.py --write
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic_settings import BaseSettings

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "deploy" / "k8s" / "lidroute" / "values.schema.json"

#: Files the chart names inside the Secrets it mounts (auth.tokensSecret, router.tls, restGateway.tls).
ACCESS_FILES = {"tls_cert_file", "tls_key_file", "tls_client_ca_file", "auth_tokens_file"}

#: Settings the chart sets from its own values, per settings class.
CHART_MANAGED: dict[str, set[str]] = {
    "commonSettings": {"redis_url"},
    "routerSettings": {"listen_address", "lid_address", *ACCESS_FILES},
    "lidSettings": {"listen_address"},
    "workerSettings": {"languages", "health_address", "worker_id"},
    "gatewaySettings": {
        "http_host",
        "http_port",
        "router_address",
        "router_tls",
        "router_ca_file",
        *ACCESS_FILES,
    },
}

_KEEP = {
    "type",
    "enum",
    "items",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "description",
    "anyOf",
}


def settings_classes() -> dict[str, type[BaseSettings]]:
    """Imported here, not at module level: the service modules pull in torch."""
    from asr_worker.worker import WorkerSettings
    from lid_service.server import LidSettings
    from lidroute.settings import CommonSettings
    from rest_gateway.server import GatewaySettings
    from router.core import RouterSettings

    return {
        "commonSettings": CommonSettings,
        "routerSettings": RouterSettings,
        "lidSettings": LidSettings,
        "workerSettings": WorkerSettings,
        "gatewaySettings": GatewaySettings,
    }


def _clean(node: dict[str, Any]) -> dict[str, Any]:
    """Keeps what draft-07 validators understand and what does not depend on the machine (defaults
    such as a home directory, pydantic's titles, formats like "path")."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key not in _KEEP:
            continue
        if key == "items":
            value = _clean(value)
        elif key == "anyOf":
            value = [_clean(v) for v in value]
        out[key] = value
    return out


def settings_definitions() -> dict[str, dict[str, Any]]:
    """One closed object schema per settings class, the shared fields only in commonSettings."""
    classes = settings_classes()
    common = set(classes["commonSettings"].model_fields)
    definitions: dict[str, dict[str, Any]] = {}
    for name, cls in classes.items():
        props = cls.model_json_schema()["properties"]
        own = [f for f in cls.model_fields if (name == "commonSettings" or f not in common)]
        fields = [f for f in own if f not in CHART_MANAGED[name]]
        definitions[name] = {
            "type": "object",
            "description": f"{cls.__name__}: {cls.__doc__.strip() if cls.__doc__ else ''}".strip(),
            "additionalProperties": False,
            "properties": {f: _clean(props[f]) for f in fields},
        }
    return definitions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help=f"update {SCHEMA.relative_to(ROOT)} in place")
    args = parser.parse_args(argv)
    schema = json.loads(SCHEMA.read_text())
    schema.setdefault("definitions", {}).update(settings_definitions())
    text = json.dumps(schema, indent=2, ensure_ascii=False) + "\n"
    if args.write:
        SCHEMA.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
