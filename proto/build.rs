//! Compiles the `.proto` files with protox (no system `protoc`) into prost
//! messages plus pbjson serde impls (the proto3 JSON mapping Connect's JSON
//! codec needs), and generates for every service a typed server trait, a
//! router constructor and a client on top of `warren_proto::connect`.

use std::{env, fmt::Write as _, path::PathBuf};

use prost_build::{Service, ServiceGenerator};

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
    std::fs::write(
        &descriptor_path,
        prost::Message::encode_to_vec(&descriptors),
    )?;

    prost_build::Config::new()
        .file_descriptor_set_path(&descriptor_path)
        .skip_protoc_run()
        .compile_well_known_types()
        .extern_path(".google.protobuf", "::pbjson_types")
        .bytes(["."])
        .service_generator(Box::new(ConnectServices))
        .compile_fds(descriptors)?;

    let set = std::fs::read(&descriptor_path)?;
    pbjson_build::Builder::new()
        .register_descriptors(&set)?
        .extern_path(".google.protobuf", "::pbjson_types")
        .build(&[".process", ".filesystem", ".agent"])?;
    Ok(())
}

/// Emits, for a service `Foo` in package `pkg`:
/// - `foo_paths::METHOD`: the Connect path of every method;
/// - `trait FooService`: one method per RPC for servers to implement;
/// - `fn foo_router(Arc<impl FooService>) -> Router`;
/// - `struct FooClient`: typed unary and server-streaming calls.
struct ConnectServices;

impl ServiceGenerator for ConnectServices {
    fn generate(&mut self, service: Service, buf: &mut String) {
        let name = &service.name;
        let snake = snake_case(name);
        let full = format!("{}.{}", service.package, service.proto_name);
        let c = "crate::connect";

        let _ = writeln!(buf, "/// Connect paths of `{full}`.");
        let _ = writeln!(buf, "pub mod {snake}_paths {{");
        for m in &service.methods {
            let _ = writeln!(
                buf,
                "    pub const {}: &str = \"/{full}/{}\";",
                const_name(&m.name),
                m.proto_name
            );
        }
        let _ = writeln!(buf, "}}\n");

        let _ = writeln!(buf, "/// The server side of `{full}`.");
        let _ = writeln!(buf, "pub trait {name}Service: Send + Sync + 'static {{");
        for m in &service.methods {
            for line in &m.comments.leading {
                let _ = writeln!(buf, "    ///{line}");
            }
            let (input, output) = (&m.input_type, &m.output_type);
            let (arg, ret) = match (m.client_streaming, m.server_streaming) {
                (false, false) => (input.clone(), output.clone()),
                (false, true) => (input.clone(), format!("{c}::MessageStream<{output}>")),
                (true, false) => (format!("{c}::MessageStream<{input}>"), output.clone()),
                (true, true) => panic!(
                    "bidirectional streaming ({full}/{}) is not supported",
                    m.proto_name
                ),
            };
            let _ = writeln!(
                buf,
                "    fn {}(&self, ctx: {c}::RequestContext, request: {arg}) -> impl ::core::future::Future<Output = Result<{ret}, {c}::ConnectError>> + Send;",
                m.name
            );
        }
        let _ = writeln!(buf, "}}\n");

        let _ = writeln!(buf, "/// Routes `{full}` calls to `service`.");
        let _ = writeln!(
            buf,
            "pub fn {snake}_router<S: {name}Service>(service: ::std::sync::Arc<S>) -> {c}::Router {{"
        );
        let _ = writeln!(buf, "    let router = {c}::Router::new();");
        for m in &service.methods {
            let register = match (m.client_streaming, m.server_streaming) {
                (false, false) => "unary",
                (false, true) => "server_stream",
                _ => "client_stream",
            };
            let _ = writeln!(
                buf,
                "    let s = service.clone();\n    let router = router.{register}({snake}_paths::{}, move |ctx, req| {{ let s = s.clone(); async move {{ s.{}(ctx, req).await }} }});",
                const_name(&m.name),
                m.name
            );
        }
        let _ = writeln!(buf, "    drop(service);\n    router\n}}\n");

        let _ = writeln!(
            buf,
            "/// A typed client of `{full}` (client-streaming methods are server-only)."
        );
        let _ = writeln!(buf, "#[derive(Clone, Debug)]");
        let _ = writeln!(buf, "pub struct {name}Client {{ inner: {c}::Client }}\n");
        let _ = writeln!(buf, "impl {name}Client {{");
        let _ = writeln!(
            buf,
            "    pub fn new(inner: {c}::Client) -> Self {{ Self {{ inner }} }}"
        );
        let _ = writeln!(
            buf,
            "    pub fn connect_client(&self) -> &{c}::Client {{ &self.inner }}"
        );
        for m in &service.methods {
            let (input, output) = (&m.input_type, &m.output_type);
            let path = format!("{snake}_paths::{}", const_name(&m.name));
            match (m.client_streaming, m.server_streaming) {
                (false, false) => {
                    let _ = writeln!(
                        buf,
                        "    pub async fn {}(&self, request: &{input}) -> Result<{output}, {c}::ConnectError> {{ self.inner.unary({path}, request).await }}",
                        m.name
                    );
                }
                (false, true) => {
                    let _ = writeln!(
                        buf,
                        "    pub async fn {}(&self, request: &{input}) -> Result<{c}::MessageStream<{output}>, {c}::ConnectError> {{ self.inner.server_stream({path}, request).await }}",
                        m.name
                    );
                }
                _ => {}
            }
        }
        let _ = writeln!(buf, "}}");
    }
}

fn snake_case(name: &str) -> String {
    let mut out = String::new();
    for (i, ch) in name.chars().enumerate() {
        if ch.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(ch.to_ascii_lowercase());
        } else {
            out.push(ch);
        }
    }
    out
}

/// `r#move` -> `MOVE`.
fn const_name(method: &str) -> String {
    method.trim_start_matches("r#").to_uppercase()
}
