"""Python's grpcio-reflection speaks grpc.reflection.v1alpha: through it a Python client finds
holdfast's services and their methods without the .proto files."""

import grpc
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

SERVICES = [
    "holdfast.v1.InteractionService",
    "holdfast.v1.DiscoveryService",
    "holdfast.v1.RetentionService",
    "holdfast.v1.AuditService",
    "holdfast.v1.AdminService",
]


def test_grpcio_reflection_lists_and_describes_the_services(server):
    with grpc.insecure_channel(
        server.grpc_addr, options=[("grpc.enable_http_proxy", 0)]
    ) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        for name in SERVICES:
            assert name in services, services
        pool = DescriptorPool(database)
        interactions = pool.FindServiceByName("holdfast.v1.InteractionService")
        methods = {method.name for method in interactions.methods}
        assert {"Ingest", "IngestStream"} <= methods, methods
        ingest = interactions.FindMethodByName("Ingest")
        assert ingest.input_type.full_name.startswith("holdfast.v1.")
        # A message reached through a method is fully described (fields and their types).
        assert len(ingest.input_type.fields) > 0
