"""A compressing JSON client on Python `websockets` (asyncio), for
`cargo bench --bench compression`: echoes COUNT messages from FILE (one a
line) through the server at URL, WINDOW at a time, and prints the time
and this process's CPU time the exchange took (the connect excluded).
Usage: json_client.py URL FILE COUNT WINDOW"""
import asyncio
import sys
import time

from websockets.asyncio.client import connect


async def main(url, path, count, window):
    with open(path) as f:
        payloads = f.read().splitlines()
    # compression="deflate" is the default: said here so that it is seen.
    async with connect(url, compression="deflate", max_size=None) as ws:
        start, cpu = time.perf_counter(), time.process_time()
        sent = 0
        while sent < count:
            batch = min(window, count - sent)
            for i in range(sent, sent + batch):
                await ws.send(payloads[i % len(payloads)])
            for _ in range(batch):
                await ws.recv()
            sent += batch
        print(f"RESULT {time.perf_counter() - start:.6f} {time.process_time() - cpu:.6f}")


asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
