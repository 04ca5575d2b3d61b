//! `warren-testkit`: what the workspace's integration tests share (a
//! dev-dependency only; nothing ships with it).
//!
//! - Prerequisites with one policy: a test that needs root is **skipped**,
//!   with the reason printed, when it does not run as root (a developer's
//!   `cargo test`); run as root (as `make test` and CI do), a missing tool,
//!   binary or file is a **failure**, because a green run must mean the test
//!   ran. Only what the project cannot install (a kernel feature, huge pages,
//!   Firecracker's spec outside the project) is skipped as root.
//! - [`built_bin`]: a binary of the workspace built beside the test.
//! - [`firecracker_spec`] and [`swagger`]: Firecracker's API spec, read from
//!   `WARREN_SHARED` (the developers' `shared/` directory beside the
//!   checkout), with a checker that holds request bodies to it.
//! - [`unique`]: names no other test process on the machine uses.

pub mod swagger;

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Whether this process runs as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `true` when running as root; otherwise prints `SKIP: <why>` and returns
/// `false` (the test then returns without asserting anything).
#[must_use]
pub fn need_root(why: &str) -> bool {
    if is_root() {
        return true;
    }
    eprintln!("SKIP: needs root ({why})");
    false
}

/// Something a test needs is missing: as root this fails the test; otherwise
/// prints `SKIP: <what>` and returns `false`.
#[must_use]
pub fn missing(what: impl Display) -> bool {
    assert!(
        !is_root(),
        "{what} (running as root, as CI does: a skipped test would report green having tested nothing)"
    );
    eprintln!("SKIP: {what}");
    false
}

/// Whether `tool` is on `PATH`.
pub fn have_tool(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Root, then every `(tool, apt package)`: see [`need_root`] and [`missing`].
#[must_use]
pub fn need_root_and_tools(why: &str, tools: &[(&str, &str)]) -> bool {
    if !need_root(why) {
        return false;
    }
    tools.iter().all(|(tool, package)| {
        have_tool(tool) || missing(format!("{tool} is not installed (apt: {package})"))
    })
}

/// `path` must be a file (installed by `package`): see [`missing`].
#[must_use]
pub fn need_file(path: &Path, package: &str) -> bool {
    path.is_file() || missing(format!("{} is missing (apt: {package})", path.display()))
}

/// The target directory of this test binary's profile
/// (`<target>/<profile>/deps/<test>` → `<target>/<profile>`).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own executable");
    exe.parent()
        .and_then(Path::parent)
        .expect("a test runs from <target>/<profile>/deps")
        .to_path_buf()
}

/// The workspace binary `name` built beside this test; `env` names a
/// variable that overrides the path. Panics with the command that builds it:
/// `make test` builds every binary first.
pub fn built_bin(name: &str, env: Option<&str>) -> PathBuf {
    if let Some(path) = env.and_then(std::env::var_os) {
        return PathBuf::from(path);
    }
    let bin = profile_dir().join(name);
    assert!(
        bin.is_file(),
        "{} is not built: run `cargo build --workspace --bins` first (make test does)",
        bin.display()
    );
    bin
}

/// Firecracker's spec, or `None` after printing why the check is skipped:
/// the spec is not part of the project (it lives in the developers'
/// `shared/` directory, `WARREN_SHARED`, default `<checkout>/../shared`).
pub fn firecracker_spec() -> Option<swagger::Spec> {
    let dir = std::env::var_os("WARREN_SHARED").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
        PathBuf::from,
    );
    let file = dir.join("firecracker/firecracker-api.yaml");
    if !file.is_file() {
        eprintln!(
            "SKIP (spec check): Firecracker's spec not found at {}: set WARREN_SHARED to the shared/ directory",
            file.display()
        );
        return None;
    }
    Some(swagger::Spec::load(&file))
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique on this machine: `<prefix><pid>-<n>`.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}
