"""A userspace ICMP echo responder that answers after a fixed delay (the lab has no netem).

Run in the peer namespace for one monitor address:

    python -m agent.lab.responder --address 198.51.100.101 --delay-ms 30 --mark 0x5eed

It answers every echo request to that address `delay` later, from that address,
with its packets marked `mark`. The kernel answers too; the lab drops the
kernel's replies (nftables: echo replies from the address without the mark), so
only the delayed reply reaches the prober.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import struct
import sys
from ipaddress import IPv4Address

ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST = 0, 8
_SO_MARK = getattr(socket, "SO_MARK", 36)


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def echo_reply(packet: bytes) -> tuple[bytes, str] | None:
    """The ICMP echo reply to an IPv4 echo request packet and where it goes, or None."""
    if len(packet) < 28 or packet[0] >> 4 != 4:
        return None
    ihl = (packet[0] & 0x0F) * 4
    icmp = packet[ihl:]
    if len(icmp) < 8 or icmp[0] != ICMP_ECHO_REQUEST or icmp[1] != 0:
        return None
    body = bytes([ICMP_ECHO_REPLY, 0, 0, 0]) + icmp[4:]
    csum = checksum(body)
    return body[:2] + struct.pack("!H", csum) + body[4:], socket.inet_ntoa(packet[12:16])


class DelayResponder:
    """Answers echo requests to `address` after `delay` seconds, on the running loop."""

    def __init__(self, address: IPv4Address, delay: float, mark: int) -> None:
        self.address = address
        self.delay = delay
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        self.sock.setsockopt(socket.SOL_SOCKET, _SO_MARK, mark)
        self.sock.bind((str(address), 0))  # receive only what is sent to the address
        self.sock.setblocking(False)
        self.answered = 0

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        loop.add_reader(self.sock.fileno(), self._readable)

    def _readable(self) -> None:
        while True:
            try:
                packet = self.sock.recv(65535)
            except BlockingIOError:
                return
            if socket.inet_ntoa(packet[16:20]) != str(self.address):
                continue
            reply = echo_reply(packet)
            if reply is not None:
                self._loop.call_later(self.delay, self._send, *reply)

    def _send(self, data: bytes, dst: str) -> None:
        try:
            self.sock.sendto(data, (dst, 0))
            self.answered += 1
        except OSError as e:  # no route back right now: the prober counts a loss
            print(f"responder: send to {dst} failed: {e}", file=sys.stderr)

    def close(self) -> None:
        self._loop.remove_reader(self.sock.fileno())
        self.sock.close()


async def serve(address: IPv4Address, delay: float, mark: int) -> None:
    responder = DelayResponder(address, delay, mark)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    responder.start(loop)
    print(f"responder ready {address} {delay * 1000:g} ms", flush=True)
    try:
        await stop.wait()
    finally:
        responder.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="lab-responder", description=__doc__.splitlines()[0])
    p.add_argument("--address", required=True, type=IPv4Address)
    p.add_argument("--delay-ms", required=True, type=float)
    p.add_argument("--mark", type=lambda v: int(v, 0), default=0x5EED)
    args = p.parse_args(argv)
    if args.delay_ms < 0:
        p.error("--delay-ms must be >= 0")
    asyncio.run(serve(args.address, args.delay_ms / 1000, args.mark))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
