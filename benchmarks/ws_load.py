#!/usr/bin/env python3
"""WebSockets through a proxy, for benchmarks/router.sh: IDLE connections that only stay open and
ACTIVE ones that each send RATE messages a second for DURATION seconds, timing each echo. Prints
`<bytes per connection> <p99 echo ms> <echoes> <failures>`: the proxy's resident memory (the sum over
the PIDs given) after every connection opened and the messages ran, less before any, per connection.
Usage: ws_load.py PORT HOST IDLE ACTIVE RATE DURATION PID..."""
import asyncio, os, struct, sys, time

port, host = int(sys.argv[1]), sys.argv[2]
idle, active, rate, duration = int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
pids = [int(p) for p in sys.argv[7:]]


def rss():
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


async def connect():
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /ws HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                 "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(head.split(b"\r\n")[0].decode())
    return reader, writer


def frame(payload):
    mask = os.urandom(4)
    return bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def talk(reader, writer, latencies, failures):
    end = time.monotonic() + duration
    while time.monotonic() < end:
        sent = time.monotonic()
        writer.write(frame(struct.pack(">d", sent) + b"x" * 24))
        try:
            h = await asyncio.wait_for(reader.readexactly(2), 5)
            await reader.readexactly(h[1] & 0x7F)
            latencies.append((time.monotonic() - sent) * 1000)
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            failures.append(1)
            return
        await asyncio.sleep(max(0, 1 / rate - (time.monotonic() - sent)))


async def main():
    before = rss()
    connections = []
    for i in range(0, idle + active, 100):
        connections += await asyncio.gather(*(connect() for _ in range(min(100, idle + active - i))))
    latencies, failures = [], []
    await asyncio.gather(*(talk(r, w, latencies, failures) for r, w in connections[:active]))
    after = rss()
    for _, w in connections:
        w.close()
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1] if latencies else float("nan")
    print(f"{(after - before) / (idle + active):.0f} {p99:.3f} {len(latencies)} {len(failures)}")

asyncio.run(main())
