//! Rebuilds the crate when the console's build output changes, and warns
//! (without failing) when there is none.

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=dist");
    if !Path::new("dist/index.html").exists() {
        println!(
            "cargo:warning=the web console is not built (web/dist is missing): run `make web`; \
             until then warren-control serves a page saying so"
        );
    }
}
