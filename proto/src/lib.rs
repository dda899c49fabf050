//! The holdfast.v1 wire contract: prost messages and tonic clients/servers generated from
//! `proto/holdfast/v1/holdfast.proto`, and the calls between the nodes of a cluster
//! (`holdfast.cluster.v1`, internal). Nothing else lives here.

#![allow(clippy::large_enum_variant, clippy::doc_lazy_continuation)]

pub mod v1 {
    tonic::include_proto!("holdfast.v1");

    /// Encoded `FileDescriptorSet`, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/holdfast_descriptor.bin"));
}

/// Calls between the nodes of a cluster (not part of the public contract).
pub mod cluster {
    pub mod v1 {
        tonic::include_proto!("holdfast.cluster.v1");
    }
}
