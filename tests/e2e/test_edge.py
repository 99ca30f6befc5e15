"""The connection edge, tried as an attacker would, on raw sockets against ``python -m proxy``:
endless and oversized heads, too many headers, clients that stall before or inside a
request, and more connections than the bound. The gateway must answer 431/408/503 as the
README says, keep serving everyone else quickly, and not grow."""

from __future__ import annotations

import shlex
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.processes import Gateway, clean_env, gateway_command, rss_mib, running
from tests.support.servers import free_port, wait_until

pytestmark = pytest.mark.e2e

# Deadlines short enough for a test; the defaults (60 s) are the same code path.
EDGE = {"HEAD_TIMEOUT": "1", "BODY_TIMEOUT": "1", "BODY_DEADLINE": "10", "RATE_LIMIT": "off",
        "MOCK_TOKEN_DELAY_MS": "0"}  # fmt: skip


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    port = free_port()
    with running(gateway_command(port), clean_env(**EDGE), port) as served:
        yield served


def connect(gateway: Gateway) -> socket.socket:
    port = int(gateway.url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything until the gateway closes the connection (or 10 s pass)."""
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def status_of(reply: bytes) -> int | None:
    return int(reply.split()[1]) if reply.startswith(b"HTTP/1.1 ") else None


def head(path: str = "/healthz", *extra: str, method: str = "GET") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: gateway", *extra, "", ""]
    return "\r\n".join(lines).encode()


def test_an_oversized_head_is_431_and_closed(gateway: Gateway) -> None:
    with connect(gateway) as sock:
        sock.sendall(head("/healthz", "X-Big: " + "a" * 1_000_000))
        reply = read_all(sock)
    assert status_of(reply) == 431
    assert b'"code": "headers_too_large"' in reply


def test_a_client_still_sending_after_its_431_gets_the_answer_and_no_reset(
    gateway: Gateway,
) -> None:
    # The gateway refuses the head once it passes the limit, then reads and drops what keeps
    # coming (a lingering close): closing with those bytes unread would reset the
    # connection, and a client still sending would lose the 431 it was sent.
    with connect(gateway) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000)
        first = sock.recv(65536)
        assert status_of(first) == 431
        sock.sendall(b"a" * 1_000_000)  # no BrokenPipeError or ConnectionResetError
        reply = first + read_all(sock)
    assert reply.endswith(b'"code": "headers_too_large"}')


def test_too_many_headers_is_431_and_a_hundred_is_fine(gateway: Gateway) -> None:
    with connect(gateway) as sock:
        sock.sendall(head("/healthz", *(f"X-H{i}: v" for i in range(101))))
        too_many = read_all(sock)
    with connect(gateway) as sock:
        sock.sendall(head("/healthz", *(f"X-H{i}: v" for i in range(98)), "Connection: close"))
        fine = read_all(sock)
    assert status_of(too_many) == 431
    assert status_of(fine) == 200


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        (b"", None),  # nothing: closed without an answer
        (b"GET /heal", 408),  # half a request line
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n", 408),  # headers without the blank line
        (head("/api/chat", "Content-Type: application/json", "Content-Length: 100",
              method="POST") + b'{"inputs":', 408),  # 10 of 100 body bytes
        (head("/api/chat", "Content-Type: application/json", "Transfer-Encoding: chunked",
              method="POST") + b"5\r\n{\"inp\r\n", 408),  # a chunked body that never ends
    ],
    ids=["nothing", "half request line", "no blank line", "short body", "endless chunks"],
)  # fmt: skip
def test_a_stalled_request_is_timed_out_and_closed(
    gateway: Gateway, sent: bytes, expected: int | None
) -> None:
    started = time.monotonic()
    with connect(gateway) as sock:
        sock.sendall(sent)
        reply = read_all(sock)
    elapsed = time.monotonic() - started
    assert status_of(reply) == expected
    assert 0.8 < elapsed < 5  # HEAD_TIMEOUT / BODY_TIMEOUT is 1 s here
    if expected:
        assert b'"code": "request_timeout"' in reply


def test_a_body_that_keeps_arriving_is_not_cut(gateway: Gateway) -> None:
    body = b'{"inputs": "How can I sleep better?"}'
    with connect(gateway) as sock:
        sock.sendall(
            head("/api/chat", "Content-Type: application/json",
                 f"Content-Length: {len(body)}", "Connection: close", method="POST")
        )  # fmt: skip
        for byte in body:  # one byte every 0.1 s: 3.7 s in all, never 1 s of silence
            sock.sendall(bytes([byte]))
            time.sleep(0.1)
        reply = read_all(sock)
    assert status_of(reply) == 200


def test_a_stream_longer_than_the_deadlines_and_keep_alive_work(gateway: Gateway) -> None:
    port = free_port()
    env = clean_env(**{**EDGE, "MOCK_TOKEN_DELAY_MS": "40"})
    with running(gateway_command(port), env, port) as slow, httpx.Client() as client:
        first = client.get(f"{slow.url}/healthz")
        time.sleep(0.3)  # idle on the kept-alive connection, under the keep-alive timeout
        with client.stream(
            "POST", f"{slow.url}/api/chat", json={"inputs": "tips for sleep", "stream": True}
        ) as response:
            started = time.monotonic()
            events = [line for line in response.iter_lines() if line.startswith("event:")]
        took = time.monotonic() - started
    assert first.status_code == 200 and response.status_code == 200
    assert took > 1.5  # longer than either deadline
    assert events[-1] == "event: done"


def probe_latencies(url: str, seconds: float) -> list[float]:
    latencies = []
    deadline = time.monotonic() + seconds
    with httpx.Client() as client:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            assert client.get(f"{url}/healthz").status_code == 200
            latencies.append(time.perf_counter() - started)
            time.sleep(0.05)
    return latencies


def test_an_endless_header_and_slow_clients_do_not_slow_anyone_else() -> None:
    port = free_port()
    # Deadlines as deployed: the attackers stay connected for the whole probe.
    with running(gateway_command(port), clean_env(RATE_LIMIT="off"), port) as gateway:
        pid = gateway.process.pid
        probe_latencies(gateway.url, 0.5)  # warm
        before = rss_mib(pid)
        stop = threading.Event()
        refused: list[bytes] = []

        def endless_header() -> None:
            with connect(gateway) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Endless: ")
                try:
                    while not stop.is_set():
                        sock.sendall(b"a" * 16384)
                except OSError:
                    pass  # closed by the gateway, as it should be
                refused.append(read_all(sock))

        attacker = threading.Thread(target=endless_header)
        attacker.start()
        slow = [connect(gateway) for _ in range(100)]
        for index, sock in enumerate(slow):  # each sends part of a head, then stalls
            sock.sendall(b"POST /api/chat HTTP/1.1\r\nHost: x\r\nX-Slow: " + str(index).encode())
        try:
            latencies = probe_latencies(gateway.url, 3)
            after = rss_mib(pid)
        finally:
            stop.set()
            attacker.join(15)
            for sock in slow:
                sock.close()
    assert statistics.median(latencies) < 0.05
    assert after - before < 20
    assert refused and status_of(refused[0]) == 431


def test_connections_beyond_the_bound() -> None:
    port = free_port()
    env = clean_env(MAX_CONNECTIONS="20", RATE_LIMIT="off", MOCK_TOKEN_DELAY_MS="300")
    with running(gateway_command(port), env, port) as gateway:
        # 30 connections that never send a head: the oldest make room for a real client.
        idle = [connect(gateway) for _ in range(30)]
        try:
            served = httpx.get(f"{gateway.url}/healthz", headers={"Connection": "close"})
        finally:
            for sock in idle:
                sock.close()
        # 20 connections inside an unfinished body: the oldest of them makes room (408).
        in_body = []
        for _ in range(20):
            sock = connect(gateway)
            sock.sendall(trickle_head(50))
            in_body.append(sock)
        time.sleep(0.2)
        try:
            made_room = httpx.get(f"{gateway.url}/healthz", headers={"Connection": "close"})
            evicted = read_all(in_body[0])
        finally:
            for sock in in_body:
                sock.close()
        # 20 connections whose requests have all arrived (streams being answered) are busy,
        # not stuck: a 21st is refused with 503 until one ends.
        body = b'{"inputs": "tips for sleep", "stream": true}'
        busy = []
        for _ in range(20):
            sock = connect(gateway)
            sock.sendall(
                head("/api/chat", "Content-Type: application/json",
                     f"Content-Length: {len(body)}", method="POST") + body
            )  # fmt: skip
            busy.append(sock)
        try:
            for sock in busy:  # the stream has begun
                assert sock.recv(64).startswith(b"HTTP/1.1 200")
            with connect(gateway) as sock:
                refused = read_all(sock)
        finally:
            for sock in busy:
                sock.close()
        after = wait_until(
            lambda: httpx.get(f"{gateway.url}/healthz").status_code == 200,
            timeout=5,
            what="a free slot",
        )
    assert served.status_code == 200
    assert made_room.status_code == 200 and status_of(evicted) == 408
    assert status_of(refused) == 503
    assert b'"code": "too_many_connections"' in refused
    assert after


def trickle_head(length: int) -> bytes:
    return head("/api/chat", "Content-Type: application/json", f"Content-Length: {length}",
                method="POST")  # fmt: skip


def test_a_body_that_trickles_past_its_deadline_is_408_and_closed() -> None:
    """One byte just inside the silence bound, for longer than BODY_DEADLINE in all."""
    port = free_port()
    env = clean_env(**{**EDGE, "BODY_DEADLINE": "2"})
    with running(gateway_command(port), env, port) as gateway, connect(gateway) as sock:
        sock.sendall(trickle_head(60000))
        started = time.monotonic()
        try:
            while time.monotonic() - started < 8:
                sock.sendall(b"a")
                time.sleep(0.5)  # under BODY_TIMEOUT (1 s): silence alone never trips
        except OSError:
            pass  # closed by the gateway, as it should be
        reply = read_all(sock)
        elapsed = time.monotonic() - started
    assert status_of(reply) == 408 and b'"code": "request_timeout"' in reply
    assert 1.8 < elapsed < 5


def test_slow_bodies_cannot_take_every_connection() -> None:
    """60 bodies at a byte a second against MAX_CONNECTIONS=50: the oldest of them make room,
    and /healthz keeps answering 200."""
    port = free_port()
    env = clean_env(MAX_CONNECTIONS="50", BODY_TIMEOUT="4", RATE_LIMIT="off")
    with running(gateway_command(port), env, port) as gateway:
        slow = []
        for _ in range(60):
            sock = connect(gateway)
            sock.sendall(trickle_head(60000) + b"{")
            slow.append(sock)
        stop = threading.Event()

        def drip() -> None:
            while not stop.wait(1):
                for sock in slow:
                    try:
                        sock.sendall(b" ")
                    except OSError:
                        pass  # evicted

        dripper = threading.Thread(target=drip)
        dripper.start()
        try:
            statuses = []
            for _ in range(28):
                response = httpx.get(f"{gateway.url}/healthz", headers={"Connection": "close"})
                statuses.append(response.status_code)
                time.sleep(0.1)
        finally:
            stop.set()
            dripper.join(5)
            for sock in slow:
                sock.close()
    assert statuses == [200] * 28


def test_connections_per_address_can_be_capped() -> None:
    port = free_port()
    env = clean_env(MAX_CONNECTIONS_PER_ADDRESS="3", RATE_LIMIT="off")
    with running(gateway_command(port), env, port) as gateway:
        held = [connect(gateway) for _ in range(3)]
        try:
            for sock in held:  # each inside a request, so none is idle
                sock.sendall(trickle_head(50))
            time.sleep(0.2)
            with connect(gateway) as sock:
                refused = read_all(sock)
        finally:
            for sock in held:
                sock.close()
        served = wait_until(
            lambda: httpx.get(f"{gateway.url}/healthz").status_code == 200,
            timeout=5,
            what="a free slot for the address",
        )
    assert status_of(refused) == 503 and b"too_many_connections" in refused
    assert served


def _limited(port: int, limits: str) -> str:
    return f"ulimit {limits}; exec {shlex.join(gateway_command(port))}"


def test_a_low_soft_open_file_limit_is_raised_to_fit() -> None:
    port = free_port()
    with running(_limited(port, "-Sn 256"), clean_env(RATE_LIMIT="off"), port) as gateway:
        limits = Path(f"/proc/{gateway.process.pid}/limits").read_text()
    soft = next(line for line in limits.splitlines() if line.startswith("Max open files"))
    assert int(soft.split()[3]) >= 1000 + 512 + 64  # MAX_CONNECTIONS, the pool, a margin
    assert "raised the open-file limit" in gateway.output


def test_an_open_file_limit_that_cannot_be_raised_lowers_the_bound() -> None:
    """Under ulimit -n 256 the default MAX_CONNECTIONS (1000) cannot be held: the bound is
    lowered to fit, so the 300th idle connection makes room instead of a client getting no
    answer at all."""
    port = free_port()
    env = clean_env(RATE_LIMIT="off")
    with running(_limited(port, "-n 256"), env, port) as gateway:
        idle = [connect(gateway) for _ in range(300)]
        try:
            served = httpx.get(f"{gateway.url}/healthz", headers={"Connection": "close"})
        finally:
            for sock in idle:
                sock.close()
    assert served.status_code == 200
    assert "the open-file limit is 256" in gateway.output
    assert "serving at most 96 client connections" in gateway.output
