"""A generic gRPC client that knows services only through server reflection (like grpcurl)."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


class ReflectionClient:
    """Lists services and calls unary methods using descriptors fetched from the server."""

    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(address)
        self.database = ProtoReflectionDescriptorDatabase(self.channel)
        self.pool = descriptor_pool.DescriptorPool(self.database)

    def services(self) -> list[str]:
        return sorted(self.database.get_services())

    def methods(self, service: str) -> list[str]:
        return [m.name for m in self.pool.FindServiceByName(service).methods]

    def call(
        self, service: str, method: str, request: dict[str, Any], timeout: float = 10.0
    ) -> dict[str, Any]:
        """Call a unary RPC with a JSON-like request; return the JSON-like response."""
        descriptor = self.pool.FindServiceByName(service).FindMethodByName(method)
        request_cls = message_factory.GetMessageClass(descriptor.input_type)
        response_cls = message_factory.GetMessageClass(descriptor.output_type)
        rpc = self.channel.unary_unary(
            f"/{service}/{method}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response_cls.FromString,
        )
        reply = rpc(json_format.ParseDict(request, request_cls()), timeout=timeout)
        return json_format.MessageToDict(reply)

    def close(self) -> None:
        self.channel.close()
