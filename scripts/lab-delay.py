#!/usr/bin/env python3
"""One-way delay (with jitter) for TCP connections a lab node opens to Redis and the Sentinels.

scripts/cluster-lab.sh runs this inside a node's namespace when the kernel has no netem
(sch_netem is not built into every kernel, and modules may not be loadable). nftables
redirects the node's connections to the Redis range here; this proxy learns the real
destination (SO_ORIGINAL_DST), connects to it with a mark the redirect rule skips, and holds
every chunk of bytes, in each direction, for DELAY ms (+ uniform JITTER) before passing it on,
never reordering. Packet loss is left to an nftables rule on the real link, so TCP sees it.

Usage: lab-delay.py PORT DELAY_MS JITTER_MS MARK
"""
import asyncio
import random
import resource
import socket
import struct
import sys

SO_ORIGINAL_DST = 80


async def pump(reader, writer, delay, jitter):
    """Copy reader to writer, each chunk DELAY (+ jitter) later; returns at EOF or error."""
    loop = asyncio.get_running_loop()
    queue = asyncio.Queue()
    last = 0.0

    async def release():
        while True:
            at, data = await queue.get()
            wait = at - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if data is None:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    task = asyncio.create_task(release())
    try:
        while True:
            data = await reader.read(65536)
            # Never earlier than the chunk before: jitter must not reorder a TCP stream.
            last = max(last, loop.time() + (delay + random.uniform(0, jitter)) / 1000)
            queue.put_nowait((last, data or None))
            if not data:
                break
        await task
    finally:
        task.cancel()


async def handle(reader, writer, delay, jitter, mark):
    sock = writer.get_extra_info("socket")
    up = None
    try:
        raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
        port, packed = struct.unpack_from("!2xH4s", raw)
        host = socket.inet_ntoa(packed)
        if (host, port) == sock.getsockname()[:2]:
            # Not redirected (someone connected to the proxy itself): following it would
            # connect the proxy to itself, again and again, until it runs out of descriptors.
            writer.close()
            return
        up = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        up.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
        up.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # A partitioned link must fail here as it would for the node itself, and the node
        # then sees its connection to this proxy close: unacknowledged data for 2 s ends it.
        up.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 2000)
        up.setblocking(False)
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(up, (host, port)), 3)
        ureader, uwriter = await asyncio.open_connection(sock=up)
    except (OSError, asyncio.TimeoutError):
        if up is not None:
            up.close()
        writer.close()
        return
    tasks = {
        asyncio.create_task(pump(reader, uwriter, delay, jitter)),
        asyncio.create_task(pump(ureader, writer, delay, jitter)),
    }
    # Once one direction ends (EOF or error), the other gets a moment to drain; then both
    # sockets close, so nothing piles up however the peers behave.
    _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    if pending:
        await asyncio.wait(pending, timeout=5)
    for t in tasks:
        t.cancel()
    writer.close()
    uwriter.close()


async def main():
    port, delay, jitter, mark = (int(a) for a in sys.argv[1:5])
    # Python's default soft limit (1024) is lower than what a node's reconnect attempts can
    # hold open during a long partition.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, delay, jitter, mark), "127.0.0.1", port
    )
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
