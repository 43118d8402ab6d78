"""A Python `websockets` server for tests/fault_injection.rs and tests/soak.rs.

Usage: fault_server.py REPORT_PORT. Prints "PORT <n>" once listening on
127.0.0.1; exits when stdin closes. Connects to 127.0.0.1:REPORT_PORT and
writes there one JSON line per finished connection.

Path /f/ID/N/CLOSE_AFTER/SEED: sends N checksummed messages (text and
binary, sizes from SEED) while it reads the client's; CLOSE_AFTER -1 leaves
the close to the client, else it closes with 4001 once it has sent its N
and read CLOSE_AFTER messages, and goes on reading until the client answers.

A message is a 24-byte ASCII header, seq (8 digits), body length (8
digits), CRC-32 of the body (8 hex digits), then the body.

The line: {"id", "recv": [[seq, ok, is_text], ...], "sent": [is_text, ...]
(all sent before its close frame), "close_rcvd", "close_sent" (codes or
null), "initiated" ("server", "client" or null)}.
"""
import asyncio
import base64
import json
import os
import random
import sys
import zlib

import websockets
from websockets.asyncio.server import serve

report = None


def make(seq, size, text):
    if text:
        body = base64.b64encode(os.urandom(size * 3 // 4 + 3))[:size]
    else:
        body = os.urandom(size)
    head = b"%08d%08d%08x" % (seq, len(body), zlib.crc32(body))
    return (head + body).decode() if text else head + body


def check(msg):
    data = msg.encode() if isinstance(msg, str) else msg
    try:
        seq, n, crc = int(data[:8]), int(data[8:16]), int(data[16:24], 16)
    except ValueError:
        return -1, False
    body = data[24:]
    return seq, len(body) == n and zlib.crc32(body) == crc


def size_of(rng):
    r = rng.random()
    if r < 0.5:
        return rng.randrange(0, 100)
    if r < 0.8:
        return rng.randrange(100, 4096)
    return rng.randrange(4096, 100_000)


async def handler(ws):
    parts = ws.request.path.split("/")
    if len(parts) != 6 or parts[1] != "f":
        await ws.close(4400, "bad path")
        return
    cid, n, close_after, seed = parts[2], int(parts[3]), int(parts[4]), int(parts[5])
    rng = random.Random(seed)
    recv, sent = [], []
    initiated = None
    got = asyncio.Event()

    async def sender():
        nonlocal initiated
        for seq in range(n):
            text = rng.random() < 0.5
            # Counted before: a send that fails half-way may still arrive.
            sent.append(text)
            await ws.send(make(seq, size_of(rng), text))
        if close_after >= 0:
            while len(recv) < close_after:
                got.clear()
                await got.wait()
            if ws.protocol.close_sent is None and ws.protocol.close_rcvd is None:
                initiated = "server"
            await ws.close(4001, "server done")

    task = asyncio.create_task(sender())
    try:
        # Reads on after our close frame: what the client sent before it
        # saw that frame must still arrive.
        async for msg in ws:
            seq, ok = check(msg)
            recv.append([seq, ok, isinstance(msg, str)])
            got.set()
    except websockets.ConnectionClosed:
        pass
    finally:
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, websockets.ConnectionClosed):
            pass
        await ws.wait_closed()
        p = ws.protocol
        if initiated is None and p.close_rcvd is not None and (p.close_sent is None or p.close_rcvd_then_sent):
            initiated = "client"
        line = {
            "id": cid,
            "recv": recv,
            "sent": sent,
            "close_rcvd": p.close_rcvd.code if p.close_rcvd else None,
            "close_sent": p.close_sent.code if p.close_sent else None,
            "initiated": initiated,
        }
        report.write((json.dumps(line) + "\n").encode())


async def main():
    global report
    _, report = await asyncio.open_connection("127.0.0.1", int(sys.argv[1]))
    # permessage-deflate when the client offers it.
    async with serve(handler, "127.0.0.1", 0, max_size=None, compression="deflate",
                     ping_interval=None, close_timeout=3, max_queue=None) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"PORT {port} websockets {websockets.__version__}", flush=True)
        # The test process holds our stdin: its end is ours.
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


asyncio.run(main())
