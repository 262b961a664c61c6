"""The servers' one interceptor: every method of every service maps errors to a status, counted and timed.

A real `grpc.aio` server built by `GrpcServer` (as the router, LID service and worker build
theirs), serving a small generic service with one method of each streaming kind.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from lidroute.errors import InvalidArgument, LanguageNotFound
from lidroute.server import GrpcServer

SERVICE = "test.v1.Probe"


def handled(method: str, code: str) -> float:
    labels = {"grpc_service": SERVICE, "grpc_method": method, "grpc_code": code}
    return REGISTRY.get_sample_value("lidroute_grpc_server_handled_total", labels) or 0.0


def timed(method: str) -> float:
    labels = {"grpc_service": SERVICE, "grpc_method": method}
    return REGISTRY.get_sample_value("lidroute_grpc_server_handling_seconds_count", labels) or 0.0


async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    if request == b"bad":
        raise InvalidArgument("bad request: say something else")
    if request == b"crash":
        raise ZeroDivisionError("a bug")
    if request == b"full":
        raise redis.exceptions.OutOfMemoryError("OOM command not allowed when used memory > 'maxmemory'.")
    return request


async def count_up(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    for i in range(int(request)):
        yield str(i).encode()
    raise LanguageNotFound("no model for 'zz'")


async def join(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
    return b"".join([r async for r in requests])


async def shout(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    async for request in requests:
        if not request:
            raise InvalidArgument("empty message")
        yield request.upper()


async def check(request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext) -> bytes:
    return request.service.encode()


async def checks(requests: AsyncIterator[health_pb2.HealthCheckRequest], context) -> AsyncIterator[bytes]:  # type: ignore[no-untyped-def]
    async for request in requests:
        yield request.service.encode()


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    server = GrpcServer("127.0.0.1:0", [SERVICE], grace_s=0.1)
    server.server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                SERVICE,
                {
                    "Echo": grpc.unary_unary_rpc_method_handler(echo),
                    "CountUp": grpc.unary_stream_rpc_method_handler(count_up),
                    "Join": grpc.stream_unary_rpc_method_handler(join),
                    "Shout": grpc.stream_stream_rpc_method_handler(shout),
                    # Typed: the request bytes must parse as a message.
                    "Check": grpc.unary_unary_rpc_method_handler(
                        check, request_deserializer=health_pb2.HealthCheckRequest.FromString
                    ),
                    "Checks": grpc.stream_stream_rpc_method_handler(
                        checks, request_deserializer=health_pb2.HealthCheckRequest.FromString
                    ),
                },
            )
        ]
    )
    port = await server.start()
    await server.set_serving(True)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as chan:
        yield chan
    await server.shutdown()


async def test_a_domain_error_reaches_the_client_as_its_status_and_message(channel: grpc.aio.Channel) -> None:
    call = channel.unary_unary(f"/{SERVICE}/Echo")
    before = handled("Echo", "INVALID_ARGUMENT"), handled("Echo", "OK"), timed("Echo")
    assert await call(b"hello") == b"hello"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(b"bad")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "bad request: say something else"
    after = handled("Echo", "INVALID_ARGUMENT"), handled("Echo", "OK"), timed("Echo")
    assert [b - a for a, b in zip(before, after, strict=True)] == [1, 1, 2]


async def test_a_bug_is_internal_and_says_no_more_than_its_type(channel: grpc.aio.Channel) -> None:
    before = handled("Echo", "INTERNAL")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await channel.unary_unary(f"/{SERVICE}/Echo")(b"crash")
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert err.value.details() == "internal error: ZeroDivisionError"
    assert handled("Echo", "INTERNAL") == before + 1


async def test_redis_refusing_a_write_for_memory_is_resource_exhausted_with_retry_after(
    channel: grpc.aio.Channel,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await channel.unary_unary(f"/{SERVICE}/Echo")(b"full")
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "Redis" in (err.value.details() or "") and "maxmemory" in (err.value.details() or "")
    assert ("retry-after", "2") in list(err.value.trailing_metadata() or ())


async def test_a_streamed_reply_keeps_what_was_sent_before_the_error(channel: grpc.aio.Channel) -> None:
    before = handled("CountUp", "NOT_FOUND")
    call = channel.unary_stream(f"/{SERVICE}/CountUp")(b"3")
    got = []
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for message in call:
            got.append(message)
    assert got == [b"0", b"1", b"2"]
    assert (err.value.code(), err.value.details()) == (grpc.StatusCode.NOT_FOUND, "no model for 'zz'")
    assert handled("CountUp", "NOT_FOUND") == before + 1


async def test_streamed_requests_are_served_and_their_errors_mapped(channel: grpc.aio.Channel) -> None:
    async def messages(*items: bytes) -> AsyncIterator[bytes]:
        for item in items:
            yield item

    assert await channel.stream_unary(f"/{SERVICE}/Join")(messages(b"a", b"b")) == b"ab"
    assert handled("Join", "OK") >= 1
    call = channel.stream_stream(f"/{SERVICE}/Shout")(messages(b"hi", b""))
    got = []
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for message in call:
            got.append(message)
    assert got == [b"HI"]
    assert (err.value.code(), err.value.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "empty message")
    assert handled("Shout", "INVALID_ARGUMENT") >= 1


async def test_health_checks_pass_through_and_are_not_counted(channel: grpc.aio.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=SERVICE))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    counted = [
        s
        for metric in REGISTRY.collect()
        if metric.name == "lidroute_grpc_server_handled"
        for s in metric.samples
        if s.labels.get("grpc_service") == "grpc.health.v1.Health"
    ]
    assert not counted


#: Not a message: a truncated field, and a string field that is not UTF-8 (field 1, 2 bytes).
UNDECODABLE = [b"\x0a\x05ab", b"\x0a\x02\xff\xfe"]


@pytest.mark.parametrize("data", UNDECODABLE)
async def test_bytes_that_are_no_message_are_invalid_argument_not_internal(
    channel: grpc.aio.Channel, data: bytes
) -> None:
    assert await channel.unary_unary(f"/{SERVICE}/Check")(b"\x0a\x02ok", timeout=5) == b"ok"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await channel.unary_unary(f"/{SERVICE}/Check")(data, timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid message" in (err.value.details() or "")
    call = channel.stream_stream(f"/{SERVICE}/Checks")(iter([b"\x0a\x01a", data]), timeout=5)
    assert await call.read() == b"a"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call.read()
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert handled("Checks", "INVALID_ARGUMENT") >= 1
