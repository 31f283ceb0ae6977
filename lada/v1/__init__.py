"""Generated protobuf and gRPC stubs for the lada.v1 wire protocol (do not edit)."""
