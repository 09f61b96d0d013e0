"""Tell whether a Kafka broker answers: ApiVersions v0, then Metadata v1.

Standard library only, so it runs before any virtualenv exists. Exit status 0
when the broker answered both requests and lists at least one live broker,
1 otherwise (the reason on stderr). Used by deploy/local/stack.sh.

    python3 kafka_probe.py HOST PORT [TIMEOUT_SECONDS]
"""

from __future__ import annotations

import socket
import struct
import sys

API_VERSIONS = 18
METADATA = 3


def _request(sock: socket.socket, api_key: int, version: int, corr: int, body: bytes) -> bytes:
    client_id = b"siyu-stack-probe"
    header = struct.pack(">hhih", api_key, version, corr, len(client_id)) + client_id
    payload = header + body
    sock.sendall(struct.pack(">i", len(payload)) + payload)
    size = struct.unpack(">i", _read(sock, 4))[0]
    data = _read(sock, size)
    (got_corr,) = struct.unpack(">i", data[:4])
    if got_corr != corr:
        raise RuntimeError(f"correlation id {got_corr} != {corr}")
    return data[4:]


def _read(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by broker")
        buf += chunk
    return bytes(buf)


def probe(host: str, port: int, timeout: float) -> int:
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        resp = _request(sock, API_VERSIONS, 0, 1, b"")
        (error,) = struct.unpack(">h", resp[:2])
        if error:
            raise RuntimeError(f"ApiVersions error code {error}")
        # Metadata v1 with an empty topic list: brokers and controller only.
        resp = _request(sock, METADATA, 1, 2, struct.pack(">i", 0))
        (brokers,) = struct.unpack(">i", resp[:4])
        return brokers


def main(argv: list[str]) -> int:
    host, port = argv[1], int(argv[2])
    timeout = float(argv[3]) if len(argv) > 3 else 3.0
    try:
        brokers = probe(host, port, timeout)
    except (OSError, RuntimeError, struct.error) as exc:
        print(f"kafka {host}:{port} not answering: {exc}", file=sys.stderr)
        return 1
    if brokers < 1:
        print(f"kafka {host}:{port} answered but lists no live broker", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
