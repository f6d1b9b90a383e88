"""Hostile input on every route: CR, LF, NUL and UTF-8 in headers, oversized bodies, bad counts."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import pytest
from cic_gateway.settings import GatewaySettings
from conftest import Servers
from test_security_routes import (
    BODIES,
    MAX_BODY,
    Gateway,
    Tally,
    openai_error,
    operations,
    security_gateway,
)

pytestmark = pytest.mark.chaos


@pytest.fixture(scope="module")
async def gateway(servers: Servers) -> AsyncIterator[Gateway]:
    async with security_gateway(servers) as served:
        yield served


async def raw(port: int, head: bytes, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """One request as bytes (what httpx refuses to send: CR, LF, NUL, UTF-8 in headers);
    the status, headers and body of the answer (0 when none came)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def send() -> None:  # beside reading: a server that refuses early stops reading
        with contextlib.suppress(ConnectionError):
            writer.write(head + b"Connection: close\r\n\r\n" + body)
            await writer.drain()

    sending = asyncio.create_task(send())
    chunks = []
    try:  # 10 s guards against a server that waits for what never comes (answered: 0)
        async with asyncio.timeout(10):
            while chunk := await reader.read(65536):
                chunks.append(chunk)
    except (ConnectionResetError, TimeoutError):
        pass
    finally:
        sending.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await sending
        writer.close()
    status, _, rest = b"".join(chunks).partition(b"\r\n")
    lines, _, content = rest.partition(b"\r\n\r\n")
    pairs = [line.decode("latin-1").split(":", 1) for line in lines.split(b"\r\n") if b":" in line]
    parts = status.split()
    return int(parts[1]) if len(parts) > 1 else 0, {k.lower(): v.strip() for k, v in pairs}, content


async def test_malformed_headers_are_refused_and_grant_nothing(gateway: Gateway) -> None:
    key = f"Authorization: Bearer {gateway.user_key}".encode()
    prefix = gateway.user_key.split("-")[1].encode()
    # (what, header lines, answer to GET /admin/keys, answer to POST /v1/chat/completions):
    # a header the parser cannot trust is a 400, headers past 64 KiB in all a 431; one it
    # can is judged as usual (the user key is 403 on the admin route, 200 on its model).
    cases = [
        ("CR inside the key's header", key + b"\rX-Cic-Scope: admin", 400, 400),
        ("LF inside the key's header", key + b"\nX-Cic-Scope: admin", 400, 400),
        ("the key folded onto a second line", b"Authorization: Bearer\r\n " + key[22:], 400, 400),
        ("NUL inside the key", key + b"\x00admin", 400, 400),
        ("UTF-8 in a key", b"Authorization: Bearer cic-" + prefix + b"-s\xc3\xa9cret\xe2\x80\x8b"
         + b"x" * 20, 401, 401),
        ("UTF-8 in a header name", b"X-\xc3\x9cnicode: 1\r\n" + key, 400, 400),
        ("bytes that are not UTF-8 in a value", b"X-Session-Id: \xff\xfe\xe2\x98\x83\r\n" + key,
         403, 200),
        ("a Set-Cookie after a CRLF", b"X-Request-Id: a\r\nSet-Cookie: pwned=1\r\n" + key,
         403, 200),
        ("a 32 KiB header", b"X-Padding: " + b"a" * 32768 + b"\r\n" + key, 403, 200),
        ("headers past 64 KiB", b"X-Padding: " + b"a" * 65536 + b"\r\n" + key, 431, 431),
        ("a 1 MiB header", b"X-Padding: " + b"a" * 1048576 + b"\r\n" + key, 431, 431),
        ("3,000 small headers", b"".join(b"X-%d: %032d\r\n" % (i, i) for i in range(3000))
         + key, 431, 431),
    ]  # fmt: skip
    chat = json.dumps(BODIES[("POST", "/v1/chat/completions")]).encode()
    targets = [(b"GET /admin/keys HTTP/1.1\r\nHost: gw\r\n", b""),
               (b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application"
                b"/json\r\nContent-Length: %d\r\n" % len(chat), chat)]  # fmt: skip
    tally = Tally("malformed headers", gateway.secrets)
    for what, lines, *statuses in cases:
        for (head, body), want in zip(targets, statuses, strict=True):
            status, headers, content = await raw(gateway.port, head + lines + b"\r\n", body)
            # Nothing of the request comes back as a header of the answer.
            echoed = "set-cookie" in headers or headers.get("x-request-id") == "a"
            shaped = status != 431 or openai_error(content) is not None
            tally.check(f"{what} on {head.split()[1].decode()} (echoed: {echoed})", status,
                        content, status == want and not echoed and shaped)  # fmt: skip
    tally.conclude(
        "CR, LF, NUL, folding and UTF-8 over raw sockets, on an admin and a proxied route"
    )


async def test_a_header_that_never_ends_is_refused_as_it_grows(gateway: Gateway) -> None:
    """Sent 16 KiB at a time and never finished: the gateway does not wait for its end
    (which a parser would hold in memory however long it grew) but answers 431 once the
    head passes 64 KiB, and closes."""
    tally = Tally("a header that never ends", gateway.secrets)
    for path in (b"/v1/chat/completions", b"/admin/keys"):
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        sent = 0
        try:
            writer.write(b"POST " + path + b" HTTP/1.1\r\nHost: gw\r\nX-Padding: ")
            reading = asyncio.create_task(reader.read())  # the answer, up to the server's EOF
            with contextlib.suppress(ConnectionError):
                while sent < 1024 * 1024 and not reading.done():
                    writer.write(b"a" * 16384)
                    await writer.drain()
                    sent += 16384
                    await asyncio.sleep(0.01)  # each piece a read of its own
            async with asyncio.timeout(10):
                answer = await reading
        finally:
            writer.close()
        status_line, _, rest = answer.partition(b"\r\n")
        body = rest.partition(b"\r\n\r\n")[2]
        status = int(status_line.split()[1]) if len(status_line.split()) > 1 else 0
        refused = status == 431 and openai_error(body) is not None
        tally.check(f"{path.decode()}: {sent} bytes sent", status, body,
                    refused and sent < 1024 * 1024)  # fmt: skip
    tally.conclude("16 KiB at a time, never finished, on a proxied and an admin route")


async def test_an_oversized_body_is_refused_on_every_route_before_it_is_read(
    gateway: Gateway,
) -> None:
    padding = b'{"pad": "' + b"a" * MAX_BODY + b'"}'
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(padding), padding)
    admin = f"Authorization: Bearer {gateway.admin_key}\r\n".encode()
    declared = b"Content-Length: %d\r\n" % (MAX_BODY + 1)
    tally = Tally("oversized bodies", gateway.secrets)
    for method, path, operation in await operations(gateway):
        start = f"{method} {gateway.url(path, operation)} HTTP/1.1\r\nHost: gw\r\n".encode()
        # A size declared and never sent is refused without waiting for the body; a body
        # of no declared size is counted as it comes.
        sends = [("declared, admin", declared + admin, b""), ("declared, no key", declared, b"")]
        if "requestBody" in operation:
            sends.append(("chunked, admin", b"Transfer-Encoding: chunked\r\n" + admin, chunked))
        for what, lines, body in sends:
            status, _, content = await raw(gateway.port, start + lines, body)
            tally.check(f"{method} {path} {what}", status, content,
                        status == 413 and openai_error(content) is not None)  # fmt: skip
    tally.conclude(f"over {MAX_BODY} bytes: declared and not sent, or chunked")


async def test_abusive_counts_are_bad_requests_naming_their_field(gateway: Gateway) -> None:
    # As JSON text: NaN, Infinity and 1e400 (a float infinity) have no Python literal here.
    past = GatewaySettings.model_fields["max_tokens"].default + 1  # past n's limit too
    values = ["-1", "0", str(past), "9223372036854775808", "1e400", "NaN", "Infinity", "1.5",
              "2.0", '"8"', "true", "[8]", '{"$gt": 0}']  # fmt: skip
    headers = {**gateway.auth(gateway.user_key), "Content-Type": "application/json"}
    tally = Tally("max_tokens and n abuse", gateway.secrets)
    for (method, path), body in BODIES.items():
        if not path.startswith("/v1/"):
            continue
        for name in ("max_tokens", "max_completion_tokens", "n"):
            for value in values:  # for the served model: a count let through would be served
                base = json.dumps({k: v for k, v in body.items() if k != name})
                content = f'{base[:-1]}, "{name}": {value}}}'
                answer = await gateway.http.request(method, path, content=content, headers=headers)
                param = (openai_error(answer.content) or {}).get("param")
                tally.check(f"{path} {name}={value}", answer.status_code, answer.content,
                            (answer.status_code, param) == (400, name))  # fmt: skip
    tally.conclude("negative, huge, NaN, float, string, bool, list, object; served model")
