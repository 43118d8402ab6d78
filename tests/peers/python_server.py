"""A WebSocket server on the Python `websockets` library, for tests/interop.rs.

Prints "PORT <n>" once listening on 127.0.0.1; exits when stdin closes.
With --tls CERT KEY it serves wss:// with that certificate and key; with
--unix PATH it listens on that Unix domain socket instead (and prints
"PORT 0").
Echoes every message, except these text commands:
  close CODE REASON   close with that code and reason
  fragments A|B|C     send one text message in fragments A, B, C
  ping PAYLOAD        ping with PAYLOAD; after the matching pong: "pong PAYLOAD"
  headers             JSON {"path", "headers"} of the handshake request
  close-of TOKEN      how connection /id/TOKEN was closed: "CODE REASON",
                      "no-close-frame", or "pending"
Subprotocols: chat and superchat, the first the client offers wins.
Compression: off on every path but /deflate/SNCT/CNCT/SBITS/CBITS, where
permessage-deflate is served with server_no_context_takeover and
client_no_context_takeover (1 or 0) and server_max_window_bits and
client_max_window_bits (a number, or "-" for none); /deflate/-/-/-/- (all
"-") accepts what the client offers as it offers it.
"""
import asyncio
import json
import sys

import websockets
from websockets.asyncio.server import serve, unix_serve
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory

closes = {}


def select_subprotocol(connection, offered):
    for p in offered:
        if p in ("chat", "superchat"):
            return p
    return None


def process_request(connection, request):
    """Serves permessage-deflate with the settings the path names."""
    parts = request.path.split("/")
    if len(parts) == 6 and parts[1] == "deflate":
        snct, cnct, sbits, cbits = parts[2:]
        factory = ServerPerMessageDeflateFactory(
            server_no_context_takeover=snct == "1",
            client_no_context_takeover=cnct == "1",
            server_max_window_bits=None if sbits == "-" else int(sbits),
            client_max_window_bits=None if cbits == "-" else int(cbits),
        )
        connection.protocol.available_extensions = [factory]
    return None


async def handler(ws):
    path = ws.request.path
    token = path[len("/id/"):] if path.startswith("/id/") else None
    try:
        async for msg in ws:
            if isinstance(msg, str):
                if msg.startswith("close "):
                    parts = msg.split(" ", 2)
                    await ws.close(int(parts[1]), parts[2] if len(parts) > 2 else "")
                    return
                if msg.startswith("fragments "):
                    await ws.send(msg[len("fragments "):].split("|"))
                    continue
                if msg.startswith("ping "):
                    payload = msg[len("ping "):]
                    pong = await ws.ping(payload.encode())
                    await asyncio.wait_for(pong, 10)  # resolves on a pong with this payload
                    await ws.send("pong " + payload)
                    continue
                if msg == "headers":
                    headers = {k.lower(): v for k, v in ws.request.headers.raw_items()}
                    await ws.send(json.dumps({"path": path, "headers": headers}))
                    continue
                if msg.startswith("close-of "):
                    await ws.send(closes.get(msg[len("close-of "):], "pending"))
                    continue
            await ws.send(msg)
    except websockets.ConnectionClosed:
        pass
    finally:
        if token is not None:
            await ws.wait_closed()
            rcvd = ws.protocol.close_rcvd
            closes[token] = f"{rcvd.code} {rcvd.reason}" if rcvd else "no-close-frame"


async def main():
    args = sys.argv[1:]
    ssl_context = None
    unix_path = None
    while args:
        if args[0] == "--tls" and len(args) >= 3:
            import ssl
            ssl_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ssl_context.load_cert_chain(args[1], args[2])
            args = args[3:]
        elif args[0] == "--unix" and len(args) >= 2:
            unix_path = args[1]
            args = args[2:]
        else:
            sys.exit(f"unknown arguments: {args}")
    settings = dict(select_subprotocol=select_subprotocol, max_size=None, compression=None,
                    ssl=ssl_context, process_request=process_request)
    if unix_path is not None:
        server_cm = unix_serve(handler, unix_path, **settings)
    else:
        server_cm = serve(handler, "127.0.0.1", 0, **settings)
    async with server_cm as server:
        port = 0 if unix_path is not None else server.sockets[0].getsockname()[1]
        print(f"PORT {port} websockets {websockets.__version__}", flush=True)
        # The test process holds our stdin: its end is ours.
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


asyncio.run(main())
