//! Fuzz build-archive inspection (tar, tar.gz, zip): never a panic, and an
//! accepted archive holds only clean relative paths and symlinks that stay
//! inside it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warren_recipe::archive::{EntryKind, inspect};

fuzz_target!(|data: &[u8]| {
    let Ok(index) = inspect(std::io::Cursor::new(data)) else {
        return;
    };
    for e in &index.entries {
        assert!(!e.path.starts_with('/'));
        assert!(!e.path.split('/').any(|p| p == ".." || p == "."));
        if let EntryKind::Symlink { target } = &e.kind {
            assert!(!target.starts_with('/'));
        }
    }
});
