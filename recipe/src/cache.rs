//! Cache keys of a recipe's steps: a rebuild re-runs only the steps whose
//! key changed.
//!
//! The key of step N is a SHA-256 over the base template, the normalised
//! steps 0..=N (their [`Instruction`]s, so keyword case, spacing between
//! words, comments and line numbers do not matter) and the bytes of every
//! file the `COPY` steps among them read. It is computed as a chain, key N
//! = H(key N-1, step N, files step N copies), which is the same thing: a
//! changed `COPY` input changes its step's key and every later one, and no
//! earlier one.
//!
//! The archive is abstract ([`ArchiveLookup`]) so the control plane can
//! serve it from wherever it keeps uploads; [`super::archive::ArchiveIndex`]
//! implements it for an inspected tar, tar.gz or zip file.

use std::fmt;

use sha2::{Digest, Sha256};

use super::{Instruction, Recipe};

/// A file (or symlink) in a build archive, as the cache sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveFile {
    /// Clean path relative to the archive's root (`src/main.py`).
    pub path: String,
    /// Permission bits.
    pub mode: u32,
    /// SHA-256 of the content (of the target, for a symlink).
    pub digest: [u8; 32],
}

/// Where `COPY` sources are looked up.
pub trait ArchiveLookup {
    /// The files at `path` or below it (when it is a directory), `""` being
    /// the root; empty when there is nothing there.
    fn files_under(&self, path: &str) -> Vec<ArchiveFile>;
}

/// A step's cache key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey(pub [u8; 32]);

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({self})")
    }
}

/// A `COPY` source that names nothing in the archive.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: COPY source {source_path:?} is not in the build archive")]
pub struct MissingSource {
    pub line: usize,
    pub source_path: String,
}

/// Feeds a length-prefixed field (so fields cannot run into each other).
fn field(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

/// One key per step of `recipe`, built on template `base`.
pub fn cache_keys(
    base: &str,
    recipe: &Recipe,
    archive: &dyn ArchiveLookup,
) -> Result<Vec<CacheKey>, MissingSource> {
    let mut h = Sha256::new();
    field(&mut h, b"warren-recipe-cache-v1");
    field(&mut h, base.as_bytes());
    let mut previous: [u8; 32] = h.finalize().into();
    let mut keys = Vec::with_capacity(recipe.steps.len());
    for step in &recipe.steps {
        let mut h = Sha256::new();
        field(&mut h, &previous);
        // Serialising the instruction cannot fail: strings, numbers, lists.
        let normalised = serde_json::to_vec(&step.instruction).unwrap_or_default();
        field(&mut h, &normalised);
        if let Instruction::Copy { sources, .. } = &step.instruction {
            for source in sources {
                let files = matching(archive, source);
                if files.is_empty() {
                    return Err(MissingSource {
                        line: step.line,
                        source_path: source.clone(),
                    });
                }
                for f in files {
                    field(&mut h, f.path.as_bytes());
                    field(&mut h, &f.mode.to_le_bytes());
                    field(&mut h, &f.digest);
                }
            }
        }
        previous = h.finalize().into();
        keys.push(CacheKey(previous));
    }
    Ok(keys)
}

/// The files a source names: a path (file or directory) or a pattern whose
/// `*` and `?` match within one path component. Sorted by path.
pub fn matching(archive: &dyn ArchiveLookup, source: &str) -> Vec<ArchiveFile> {
    let mut files = if source.contains(['*', '?']) {
        // Look under the directory before the first wildcard.
        let fixed: Vec<&str> = source
            .split('/')
            .take_while(|part| !part.contains(['*', '?']))
            .collect();
        let pattern: Vec<&str> = source.split('/').collect();
        archive
            .files_under(&fixed.join("/"))
            .into_iter()
            .filter(|f| {
                let parts: Vec<&str> = f.path.split('/').collect();
                // The pattern names the file itself or a directory above it.
                parts.len() >= pattern.len()
                    && pattern
                        .iter()
                        .zip(&parts)
                        .all(|(p, part)| glob_match(p.as_bytes(), part.as_bytes()))
            })
            .collect()
    } else {
        archive.files_under(source)
    };
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files.dedup_by(|a, b| a.path == b.path);
    files
}

/// `*` (any run) and `?` (one character) within one path component.
fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob_match(&pattern[1..], name) || (!name.is_empty() && glob_match(pattern, &name[1..]))
        }
        (Some(b'?'), Some(_)) => glob_match(&pattern[1..], &name[1..]),
        (Some(p), Some(n)) if p == n => glob_match(&pattern[1..], &name[1..]),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse;

    /// An archive as a list of (path, content).
    struct Files(Vec<(&'static str, Vec<u8>)>);

    impl ArchiveLookup for Files {
        fn files_under(&self, path: &str) -> Vec<ArchiveFile> {
            self.0
                .iter()
                .filter(|(p, _)| {
                    path.is_empty() || *p == path || p.starts_with(&format!("{path}/"))
                })
                .map(|(p, content)| ArchiveFile {
                    path: p.to_string(),
                    mode: 0o644,
                    digest: Sha256::digest(content).into(),
                })
                .collect()
        }
    }

    const RECIPE: &str =
        "RUN apt-get update\nCOPY app/ /srv/\nRUN make\nCOPY *.cfg /etc/app/\nUSER app";

    fn archive(main: &str, cfg: &str) -> Files {
        Files(vec![
            ("app/main.py", main.as_bytes().to_vec()),
            ("app/lib/util.py", b"def f(): pass".to_vec()),
            ("a.cfg", cfg.as_bytes().to_vec()),
            ("README", b"not copied".to_vec()),
        ])
    }

    fn keys(base: &str, recipe: &str, files: &Files) -> Vec<CacheKey> {
        cache_keys(base, &parse(recipe).unwrap(), files).unwrap()
    }

    #[test]
    fn a_changed_copy_input_changes_only_later_keys() {
        let a = keys("tiny", RECIPE, &archive("print(1)", "x=1"));
        assert_eq!(a.len(), 5);
        assert_eq!(
            a,
            keys("tiny", RECIPE, &archive("print(1)", "x=1")),
            "deterministic"
        );

        let b = keys("tiny", RECIPE, &archive("print(2)", "x=1"));
        assert_eq!(a[0], b[0]);
        assert!(
            a[1..].iter().zip(&b[1..]).all(|(x, y)| x != y),
            "step 2 reads main.py"
        );

        let c = keys("tiny", RECIPE, &archive("print(1)", "x=2"));
        assert_eq!(a[..3], c[..3]);
        assert!(
            a[3..].iter().zip(&c[3..]).all(|(x, y)| x != y),
            "step 4 reads a.cfg"
        );

        // A file no COPY reads changes nothing.
        let mut other = archive("print(1)", "x=1");
        other.0[3].1 = b"edited".to_vec();
        assert_eq!(a, keys("tiny", RECIPE, &other));
    }

    #[test]
    fn steps_base_and_form() {
        let files = archive("print(1)", "x=1");
        let a = keys("tiny", RECIPE, &files);
        // Another base changes everything.
        let m = keys("minimal", RECIPE, &files);
        assert!(a.iter().zip(&m).all(|(x, y)| x != y));
        // A changed step changes it and what follows.
        let changed = keys("tiny", &RECIPE.replace("RUN make", "RUN make all"), &files);
        assert_eq!(a[..2], changed[..2]);
        assert!(a[2..].iter().zip(&changed[2..]).all(|(x, y)| x != y));
        // Case, comments, continuations and spacing between words do not matter.
        let restyled = "# hi\nrun apt-get update\ncopy   app/ \\\n  /srv/\nRUN make\n\nCOPY *.cfg /etc/app/\nuser   app\n";
        assert_eq!(a, keys("tiny", restyled, &files));
    }

    #[test]
    fn a_missing_source_is_an_error() {
        let r = parse("RUN x\nCOPY nothing/ /d/").unwrap();
        let e = cache_keys("tiny", &r, &archive("", "")).unwrap_err();
        assert_eq!((e.line, e.source_path.as_str()), (2, "nothing"));
        let r = parse("COPY *.none /d/").unwrap();
        assert!(cache_keys("tiny", &r, &archive("", "")).is_err());
    }

    #[test]
    fn wildcards_match_within_components() {
        let files = archive("", "");
        let paths = |s: &str| {
            matching(&files, s)
                .into_iter()
                .map(|f| f.path)
                .collect::<Vec<_>>()
        };
        assert_eq!(paths("*.cfg"), ["a.cfg"]);
        assert_eq!(paths("app/*.py"), ["app/main.py"]);
        assert_eq!(paths("app/*"), ["app/lib/util.py", "app/main.py"]);
        assert_eq!(paths("?.cfg"), ["a.cfg"]);
        assert_eq!(
            paths(""),
            ["README", "a.cfg", "app/lib/util.py", "app/main.py"]
        );
        assert!(glob_match(b"a*b*c", b"aXbYc"));
        assert!(!glob_match(b"a*b", b"aXc"));
    }
}
