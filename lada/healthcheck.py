"""`python -m lada.healthcheck HOST:PORT [SERVICE]`: exit 0 when the gRPC health check says SERVING.

Used by docker-compose and Kubernetes probes (no grpc_health_probe binary needed).
"""

from __future__ import annotations

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check(address: str, service: str = "", timeout: float = 3.0) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m lada.healthcheck HOST:PORT [SERVICE]", file=sys.stderr)
        return 2
    if check(argv[0], argv[1] if len(argv) > 1 else ""):
        return 0
    print(f"{argv[0]}: not SERVING", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
