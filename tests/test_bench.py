"""The benchmark's report (`make bench` itself runs the whole stack and is not a test)."""

from __future__ import annotations

from workbench.bench import breakdown


def test_the_breakdown_splits_a_request_into_the_parts_router_and_worker_timed() -> None:
    parts = {
        "language_id": [0.020, 0.030, 0.025],
        "queue": [0.002, 0.004, 0.003],
        "inference": [0.050, 0.060, 0.055],
        "total": [0.100, 0.110, 0.105],
    }
    rows = dict(line.strip("|").rsplit("|", 1) for line in breakdown([0.120, 0.125, 0.130], parts)[2:])
    got = {name.strip(): float(value) for name, value in rows.items()}
    assert got["language ID (onset VAD, LID service call)"] == 25.0
    assert got["queue (enqueued to a worker's pick-up)"] == 3.0
    assert got["worker: model and decoding"] == 55.0
    assert got["router besides: enqueue, audio and event relays"] == 105.0 - 83.0
    assert got["client and gRPC"] == 125.0 - 105.0
    assert got["end to end, at the client"] == 125.0
