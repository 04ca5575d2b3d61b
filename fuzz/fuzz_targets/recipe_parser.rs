//! Fuzz the build recipe parser: any text parses or yields errors that
//! point inside the text; parsed steps start on lines that exist, and their
//! cache keys can be computed (an empty archive only fails on COPY).
#![no_main]

use libfuzzer_sys::fuzz_target;
use warren_recipe::{
    Instruction,
    cache::{ArchiveFile, ArchiveLookup, cache_keys},
};

struct Empty;

impl ArchiveLookup for Empty {
    fn files_under(&self, _: &str) -> Vec<ArchiveFile> {
        Vec::new()
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines = text.split('\n').count();
    match warren_recipe::parse(text) {
        Ok(r) => {
            for step in &r.steps {
                assert!((1..=lines).contains(&step.line));
                if let Instruction::Copy { sources, .. } = &step.instruction {
                    assert!(sources.iter().all(|s| !s.split('/').any(|p| p == "..")));
                }
            }
            let has_copy = r
                .steps
                .iter()
                .any(|s| matches!(s.instruction, Instruction::Copy { .. }));
            assert_eq!(cache_keys("tiny", &r, &Empty).is_err(), has_copy);
        }
        Err(e) => {
            assert!(!e.errors.is_empty());
            for err in &e.errors {
                assert!((1..=lines).contains(&err.line), "{err}");
                assert!(err.column >= 1, "{err}");
            }
            let _ = e.to_string();
        }
    }
});
