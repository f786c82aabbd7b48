//! Compiles `starling/cluster/v1/cluster.proto` with the pure-Rust protox compiler (no system
//! `protoc`) and generates prost messages and tonic client and server code from the descriptors.

use std::path::Path;

const PROTO_ROOT: &str = "starling";
const PROTO_FILES: &[&str] = &["starling/cluster/v1/cluster.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    for proto_file in PROTO_FILES {
        println!("cargo:rerun-if-changed={proto_file}");
    }
    // protox resolves imports relative to the crate root, so files are named by their package path.
    let file_descriptor_set = protox::compile(PROTO_FILES, [Path::new(".")])?;
    tonic_prost_build::configure()
        // Payloads and correlation data become refcounted `bytes::Bytes`, not `Vec<u8>` copies.
        .bytes(".starling.cluster.v1")
        .compile_fds(file_descriptor_set)?;
    Ok(())
}
