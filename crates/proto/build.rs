//! Compiles the `.proto` files with protox (a protobuf compiler in Rust), so
//! the build needs no system `protoc`, and generates tonic/prost code plus a
//! file descriptor set for gRPC reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/raftq/v1/queue.proto",
        "proto/raftq/v1/cluster.proto",
        "proto/raftq/v1/raft.proto",
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("raftq_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        .bytes(".")
        .compile_fds(descriptors)?;
    Ok(())
}
