"""`python -m lada.healthcheck HOST:PORT [SERVICE] [--ca/--cert/--key PEM]`: exit 0 if SERVING.

Used by docker-compose and Kubernetes probes (no grpc_health_probe binary needed).
"""

from __future__ import annotations

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lada.config import ClientTLS
from lada.server import channel_credentials


def check(
    address: str,
    service: str = "",
    timeout: float = 3.0,
    ca: str = "",
    cert: str = "",
    key: str = "",
) -> bool:
    """True when `address` reports SERVING; `ca` checks over TLS, `cert`/`key` for mTLS."""
    credentials = channel_credentials(ClientTLS(ca=ca, cert=cert, key=key))
    channel = (
        grpc.secure_channel(address, credentials) if credentials else grpc.insecure_channel(address)
    )
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def _take_option(argv: list[str], name: str) -> tuple[str, list[str]]:
    if name not in argv:
        return "", argv
    index = argv.index(name)
    return argv[index + 1], argv[:index] + argv[index + 2 :]


def main(argv: list[str]) -> int:
    ca, argv = _take_option(argv, "--ca")
    cert, argv = _take_option(argv, "--cert")
    key, argv = _take_option(argv, "--key")
    if not argv:
        print(
            "usage: python -m lada.healthcheck HOST:PORT [SERVICE] [--ca CA.pem] "
            "[--cert CERT.pem --key KEY.pem]",
            file=sys.stderr,
        )
        return 2
    if check(argv[0], argv[1] if len(argv) > 1 else "", ca=ca, cert=cert, key=key):
        return 0
    print(f"{argv[0]}: not SERVING", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
