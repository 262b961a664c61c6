"""The benchmark's report (`make bench` itself runs the whole stack and is not a test)."""

from __future__ import annotations

from pathlib import Path

from workbench.bench import ADMISSION_LIMIT, admission, admission_rows, breakdown, naive_rows, naive_server


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


def test_the_naive_server_serves_the_same_clip_and_the_report_sets_it_beside_lidroute(
    models_dir: Path, speech
) -> None:  # type: ignore[no-untyped-def]
    """The server a user would write, a real process on the same models: it hears the language,
    every request of each level is answered, and the report gives the ratio of the rates."""
    audio = speech["es"][0].audio
    naive, heard = naive_server(models_dir, audio, "1,2")
    assert heard == "es" and set(naive) == {"c1", "c2"}
    assert all(rps > 0 and 0 < median <= p95 for rps, median, p95 in naive.values())
    ours = {"c1": (2.0, 0.5, 0.7), "c2": (3.0, 0.6, 0.9)}
    report = naive_rows(ours, {"c1": (4.0, 0.25, 0.3), "c2": (6.0, 0.3, 0.4)}, heard)
    assert "| 1 | 2.00 | 4.00 | 0.50x | 500 / 250 | 700 / 300 |" in report and "heard 'es'" in report


def test_twice_the_capacity_is_measured_on_a_router_at_its_limit(models_dir: Path, speech) -> None:  # type: ignore[no-untyped-def]
    """A real stack serving ADMISSION_LIMIT requests, sent twice as many at once: some refused,
    every admitted one transcribed, none failing otherwise; the report gives the refusals' times
    (how fast they are is the benchmark's to say, not a test's)."""
    outcomes = admission(models_dir, speech["es"][0].audio, waves=1)
    assert (
        outcomes["failed"] == []
        and len(outcomes["refused"]) + len(outcomes["admitted"]) == 2 * ADMISSION_LIMIT
    )
    assert outcomes["refused"] and len(outcomes["admitted"]) >= ADMISSION_LIMIT // 2
    report = admission_rows({"admitted": [1.0, 2.0], "refused": [0.004, 0.006, 0.010], "failed": []})
    assert "| refused, RESOURCE_EXHAUSTED | 3 | 6.0 |" in report and "| failed otherwise | 0 |" in report
