//! Compiles the `.proto` files with protox (no system `protoc`) into prost
//! messages plus pbjson serde impls (the proto3 JSON mapping Connect's JSON
//! codec needs).

use std::{env, path::PathBuf};

const PROTOS: &[&str] = &[
    "process/process.proto",
    "filesystem/filesystem.proto",
    "agent/v1/agent.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let descriptors = protox::compile(PROTOS, ["."])?;
    let descriptor_path = out.join("descriptors.bin");
    std::fs::write(&descriptor_path, prost::Message::encode_to_vec(&descriptors))?;

    prost_build::Config::new()
        .file_descriptor_set_path(&descriptor_path)
        .skip_protoc_run()
        .compile_well_known_types()
        .extern_path(".google.protobuf", "::pbjson_types")
        .bytes(["."])
        .compile_fds(descriptors)?;

    let set = std::fs::read(&descriptor_path)?;
    pbjson_build::Builder::new()
        .register_descriptors(&set)?
        .extern_path(".google.protobuf", "::pbjson_types")
        .build(&[".process", ".filesystem", ".agent"])?;
    Ok(())
}
