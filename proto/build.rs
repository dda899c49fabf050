//! Generates the holdfast.v1 code with `protox` (a pure-Rust protobuf compiler), so building
//! needs no `protoc` binary. The file descriptor set is also written for server reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/holdfast/v1/holdfast.proto";
    let cluster = "proto/holdfast/cluster/v1/cluster.proto";
    println!("cargo:rerun-if-changed={proto}");
    println!("cargo:rerun-if-changed={cluster}");
    let file_descriptors = protox::compile([proto], ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("holdfast_descriptor.bin"),
        prost::Message::encode_to_vec(&file_descriptors),
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(file_descriptors)?;
    // Calls between the nodes of a cluster: not in the descriptor set (not reflected).
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(protox::compile([cluster], ["proto"])?)?;
    Ok(())
}
