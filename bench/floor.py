"""The floor: what a Python process on uvloop pays per UDP request doing nothing.

``python -m bench.floor --port P`` answers scenario 1's REGISTERs the way a
registrar would look from sipp's side (401 with a fixed challenge to a
REGISTER without credentials, 200 to one with them) while doing none of a
registrar's work: it copies the Via, From, To, Call-ID and CSeq lines with a
few byte operations, parses nothing and checks no digest. Its CPU per request
is the least that any server written in Python on this event loop can pay:
receiving a datagram into Python, one callback, one send.

The bench runs it in scenario 1 over UDP beside Conclave and Kamailio, on the
same core and ladder, so the report can say how much of Conclave's cost is
the interpreter's floor and how much is Conclave's own work.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
from pathlib import Path
from typing import cast

from .cpus import server_prefix
from .servers import HOST, START_TIMEOUT, ServerProcess, udp_bound, wait_for

_KEPT = (b"via:", b"from:", b"to:", b"call-id:", b"cseq:")
_CHALLENGE = (
    b"SIP/2.0 401 Unauthorized\r\n"
    b'WWW-Authenticate: Digest realm="example.test", nonce="floor0123456789", '
    b'qop="auth", algorithm=MD5'
)
_OK = b"SIP/2.0 200 OK"


class Floor(asyncio.DatagramProtocol):
    """Answers every datagram at once, from its raw lines."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport is not a subclass of asyncio's, only alike.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        head = data.split(b"\r\n\r\n", 1)[0]
        out = [_OK if b"\r\nAuthorization:" in head else _CHALLENGE]
        for line in head.split(b"\r\n")[1:]:
            lowered = line[:9].lower()
            if lowered.startswith(_KEPT):
                out.append(line + b";tag=floor" if lowered.startswith(b"to:") else line)
        out.append(b"Content-Length: 0\r\n\r\n")
        self.transport.sendto(b"\r\n".join(out), addr)


async def _serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(Floor, local_addr=(HOST, port))
    print("ready", flush=True)
    await asyncio.Event().wait()


def start_floor(port: int, log_path: Path) -> ServerProcess:
    """The floor responder on ``port`` (UDP), in its own process group, pinned like
    the servers; returns once it is bound."""
    server = ServerProcess("floor", log_path=log_path)
    with log_path.open("wb") as log:
        server.proc = subprocess.Popen(
            [*server_prefix(), sys.executable, "-m", "bench.floor", "--port", str(port)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            cwd=Path(__file__).resolve().parent.parent,
        )  # fmt: skip
    try:
        wait_for(lambda: udp_bound(port), START_TIMEOUT, "the floor responder", server.alive)
    except RuntimeError:
        server.stop()
        raise
    server.ports = {"udp": port}
    return server


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    import uvloop

    uvloop.run(_serve(args.port))


if __name__ == "__main__":
    main()
