#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/seeds/<target>/ (committed; rerun to
regenerate). The frames are those tests/conformance.rs sends, the responses
real 101 answers, the URLs typical ones."""
import hashlib
import os
import struct
import sys

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fuzz", "seeds")


def frame(first, payload):
    n = len(payload)
    if n < 126:
        head = bytes([first, n])
    elif n < 65536:
        head = bytes([first, 126]) + struct.pack(">H", n)
    else:
        head = bytes([first, 127]) + struct.pack(">Q", n)
    return head + payload


def close(code, reason=b""):
    return struct.pack(">H", code) + reason


def write(target, name, data):
    d = os.path.join(root, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


streams = {
    "text": frame(0x81, b"hello"),
    "binary": frame(0x82, bytes(range(256)) * 2),
    "fragmented_text_split_code_point": frame(0x01, "€ and 𝄞".encode()[:1])
    + frame(0x00, "€ and 𝄞".encode()[1:9])
    + frame(0x80, "€ and 𝄞".encode()[9:]),
    "ping_inside_fragments": frame(0x01, b"Hello, ") + frame(0x89, b"are you there?") + frame(0x80, b"world"),
    "pong_unasked": frame(0x8A, b"unasked") + frame(0x81, b"after"),
    "close_1000": frame(0x88, close(1000)),
    "close_reason": frame(0x88, close(4000, b"bye")),
    "close_empty": frame(0x88, b""),
    "close_then_data": frame(0x88, close(1000)) + frame(0x81, b"too late"),
    "close_then_ping": frame(0x88, close(1000)) + frame(0x89, b"late ping"),
    "close_1_byte": frame(0x88, b"\x03"),
    "close_bad_code": frame(0x88, close(1005)),
    "close_bad_reason": frame(0x88, close(1000, b"\xff\xfe")),
    "close_long_reason": frame(0x88, close(1000, b"r" * 123)),
    "invalid_utf8": frame(0x81, b"ok \xc3\x28 bad"),
    "surrogate": frame(0x81, b"\xed\xa0\x80"),
    "cut_short_utf8": frame(0x81, b"abc\xe2\x82"),
    "invalid_utf8_first_fragment": frame(0x01, b"valid, then \xff"),
    "rsv1": frame(0xC1, b"x"),
    "reserved_opcode": frame(0x83, b""),
    "reserved_control": frame(0x8B, b""),
    "masked": bytes([0x81, 0x82, 1, 2, 3, 4, ord("h") ^ 1, ord("i") ^ 2]),
    "fragmented_ping": frame(0x09, b"fragmented ping"),
    "long_ping": frame(0x89, b"\x07" * 126),
    "stray_continuation": frame(0x80, b"continuation with nothing open"),
    "new_text_while_open": frame(0x01, b"open") + frame(0x81, b"new text"),
    "length_16": bytes([0x82, 126, 0, 5]) + b"long!",
    "length_64_msb": bytes([0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 1]),
    "length_64": bytes([0x82, 127, 0, 0, 0, 0, 0, 0, 0, 5]) + b"short",
    "too_big": frame(0x82, bytes(4097)),
    "too_big_fragments": frame(0x02, bytes(3000)) + frame(0x80, bytes(1200)),
    "many_small": b"".join(frame(0x82, bytes([7]) * 16) for _ in range(20)),
    "empty_messages": frame(0x81, b"") + frame(0x82, b"") + frame(0x01, b"") + frame(0x80, b""),
}
for name, data in streams.items():
    write("frames", name, b"\x00" + data)  # fed whole
write("frames", "ping_inside_fragments_bytewise", b"\x01\x00" + streams["ping_inside_fragments"])
write("frames", "split_code_point_3_7", b"\x02\x02\x06" + streams["fragmented_text_split_code_point"])
write("frames", "length_16_split", b"\x03\x00\x01\x02" + streams["length_16"])

accept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # for the key the target uses
responses = {
    "rfc6455": "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    f"Sec-WebSocket-Accept: {accept}\r\n\r\n",
    "protocol_chat": "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    f"Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: chat\r\n\r\n",
    "tungstenite": "HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\nupgrade: websocket\r\n"
    f"sec-websocket-accept: {accept}\r\n\r\n\x81\x05hello",
    "nginx": "HTTP/1.1 101 Switching Protocols\r\nServer: nginx/1.24.0\r\nDate: Wed, 26 Nov 2025 01:00:00 GMT\r\n"
    f"Connection: upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: {accept}\r\n\r\n",
    "node_ws": "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    f"Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: superchat\r\n\r\n",
    "python_websockets": "HTTP/1.1 101 Switching Protocols\r\nDate: Wed, 26 Nov 2025 01:00:00 GMT\r\n"
    f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\nServer: Python/3.12 websockets/15.0\r\n\r\n",
    "keep_alive_upgrade": "HTTP/1.1 101 Switching Protocols\r\nupgrade: WebSocket\r\nCONNECTION: keep-alive, Upgrade\r\n"
    f"Sec-WebSocket-Accept: {accept}\r\n\r\n",
    "extension": "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    f"Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=10\r\n\r\n",
    "two_protocols": "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    f"Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: chat\r\nSec-WebSocket-Protocol: superchat\r\n\r\n",
    "forbidden": "HTTP/1.1 403 Forbidden\r\nContent-Type: text/html\r\n\r\n<html><head><title>403 Forbidden</title></head>",
    "redirect": "HTTP/1.1 302 Found\r\nLocation: ws://x/\r\n\r\n",
    "wrong_accept": "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Accept: AAAA\r\n\r\n",
    "partial": "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConn",
}
for name, text in responses.items():
    write("handshake", name, b"\x00" + text.encode())
write("handshake", "padded_over_64k", b"\x81" + responses["rfc6455"].encode())
write("handshake", "padded_partial", b"\x80" + responses["partial"].encode())

urls = [
    "ws://127.0.0.1:9001/",
    "wss://example.com/chat?room=1&x=%20",
    "http://example.com/a",
    "HTTPS://Example.COM:443/",
    "ws://[::1]:8080/path",
    "ws://localhost\0chat\0superchat",
    "wss://echo.websocket.org\0v1.json.api",
    "ws://h/#frag",
    "ws://user:pass@h:80/p;q?r",
    "ws://xn--nxasmq6b.example/",
    "ws://bücher.example/ü",
    "ws://h:99999/",
    "ftp://h/",
    "ws://h\0chat\0chat",
    "ws://h\0a b",
    "ws://1.2.3/\0Chat\0chat",
    "ws://h/\r\nX-Injected: 1",
    "ws://h/ path with spaces?q=a b",
]
for url in urls:
    write("url", hashlib.sha1(url.encode()).hexdigest()[:16], url.encode())

# Proxies: a first byte choosing the proxy (bit 7: text instead), then its
# answers; the text is a proxy URL and a no_proxy list.
proxies = [
    bytes([0]) + b"HTTP/1.1 200 Connection established\r\n\r\n",
    bytes([0x18]) + b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n\r\n",
    bytes([0x21]) + bytes([5, 0, 5, 0, 0, 1, 127, 0, 0, 1, 0, 80]),
    bytes([0x05]) + bytes([5, 2, 1, 0, 5, 0, 0, 4]) + bytes(18),
    bytes([0x0A]) + bytes([5, 0, 5, 0, 0, 3, 4]) + b"name" + bytes([1, 187]),
    bytes([0x04]) + bytes([5, 2, 1, 1]),
    bytes([0x80]) + b"http://user:pa%40ss@proxy.example:3128/\0example.com, .local,10.0.0.0/8,*",
    bytes([0x80]) + b"socks5h://[::1]:1080\0::1,[fe80::]/10",
    bytes([0x80]) + b"proxy.example\0localhost",
]
for seed in proxies:
    write("proxy", hashlib.sha1(seed).hexdigest()[:16], seed)
print("seeds written under", os.path.normpath(root), file=sys.stderr)
