//! Build archives (tar, tar.gz, zip), read before anything is extracted:
//! every entry is listed with a digest of its content, and the archive is
//! refused, naming the entry, when one could land outside the directory it
//! is unpacked into:
//!
//! - a path that is absolute or climbs out with `..`;
//! - a symlink whose target is absolute or climbs out of the root from
//!   where the link is;
//! - a hard link to a path outside the root;
//! - an entry below a symlink of the same archive (writing it would follow
//!   the link);
//! - devices, FIFOs and other special files (never needed to build).
//!
//! The result, an [`ArchiveIndex`], is what `COPY` reads from
//! ([`super::cache::ArchiveLookup`]).

use std::collections::{BTreeMap, HashSet};
use std::io::{self, Read, Seek, SeekFrom};

use sha2::{Digest, Sha256};

use super::cache::{ArchiveFile, ArchiveLookup};
use super::clean_relative;

/// The archive formats a build accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    Tar,
    TarGz,
    Zip,
}

impl ArchiveFormat {
    /// Recognises a format from the first bytes (at least 262 for tar).
    pub fn detect(head: &[u8]) -> Option<Self> {
        if head.starts_with(&[0x1f, 0x8b]) {
            Some(Self::TarGz)
        } else if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
            Some(Self::Zip)
        } else if head.get(257..262) == Some(b"ustar") {
            Some(Self::Tar)
        } else {
            None
        }
    }
}

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Directory,
    Symlink {
        target: String,
    },
    /// A tar hard link to another entry (clean path).
    HardLink {
        target: String,
    },
}

/// One entry of an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveEntry {
    /// Clean path relative to the root (`""` is the root itself).
    pub path: String,
    pub kind: EntryKind,
    /// Permission bits.
    pub mode: u32,
    pub size: u64,
    /// SHA-256 of a file's content.
    pub digest: Option<[u8; 32]>,
}

/// Why an archive was refused.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("not a tar, tar.gz or zip archive")]
    UnknownFormat,
    #[error("unreadable {format:?} archive: {reason}")]
    Malformed {
        format: ArchiveFormat,
        reason: String,
    },
    #[error("archive entry {entry:?} refused: {reason}")]
    Unsafe { entry: String, reason: String },
    #[error("reading the archive: {0}")]
    Io(#[from] io::Error),
}

fn unsafe_entry(entry: &str, reason: impl Into<String>) -> ArchiveError {
    ArchiveError::Unsafe {
        entry: entry.to_owned(),
        reason: reason.into(),
    }
}

/// Every entry of a checked archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveIndex {
    pub format: ArchiveFormat,
    pub entries: Vec<ArchiveEntry>,
}

/// Reads, lists and checks an archive of any accepted format.
pub fn inspect<R: Read + Seek>(mut reader: R) -> Result<ArchiveIndex, ArchiveError> {
    let mut head = Vec::with_capacity(512);
    (&mut reader).take(512).read_to_end(&mut head)?;
    reader.seek(SeekFrom::Start(0))?;
    let format = ArchiveFormat::detect(&head).ok_or(ArchiveError::UnknownFormat)?;
    let raw = match format {
        ArchiveFormat::Tar => read_tar(reader, format)?,
        ArchiveFormat::TarGz => read_tar(flate2::read::GzDecoder::new(reader), format)?,
        ArchiveFormat::Zip => read_zip(reader)?,
    };
    Ok(ArchiveIndex {
        format,
        entries: check(raw)?,
    })
}

/// An entry as found, before the checks.
struct Raw {
    name: String,
    kind: RawKind,
    mode: u32,
    size: u64,
    digest: Option<[u8; 32]>,
}

enum RawKind {
    File,
    Directory,
    Symlink(String),
    HardLink(String),
    Special(&'static str),
}

fn digest_of(mut r: impl Read) -> io::Result<[u8; 32]> {
    let mut h = Sha256::new();
    io::copy(&mut r, &mut h)?;
    Ok(h.finalize().into())
}

fn read_tar(reader: impl Read, format: ArchiveFormat) -> Result<Vec<Raw>, ArchiveError> {
    let malformed = |e: io::Error| ArchiveError::Malformed {
        format,
        reason: e.to_string(),
    };
    let mut archive = tar::Archive::new(reader);
    let mut out = Vec::new();
    for entry in archive.entries().map_err(malformed)? {
        let mut entry = entry.map_err(malformed)?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let header = entry.header();
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        let size = header.size().unwrap_or(0);
        let link = || {
            entry
                .link_name_bytes()
                .map(|l| String::from_utf8_lossy(&l).into_owned())
                .unwrap_or_default()
        };
        use tar::EntryType as T;
        let kind = match header.entry_type() {
            T::Regular | T::Continuous => RawKind::File,
            T::Directory => RawKind::Directory,
            T::Symlink => RawKind::Symlink(link()),
            T::Link => RawKind::HardLink(link()),
            T::Char | T::Block => RawKind::Special("a device"),
            T::Fifo => RawKind::Special("a FIFO"),
            _ => RawKind::Special("an unsupported tar entry type"),
        };
        let digest = match kind {
            RawKind::File => Some(digest_of(&mut entry).map_err(malformed)?),
            _ => None,
        };
        out.push(Raw {
            name,
            kind,
            mode,
            size,
            digest,
        });
    }
    Ok(out)
}

fn read_zip(reader: impl Read + Seek) -> Result<Vec<Raw>, ArchiveError> {
    let malformed = |e: String| ArchiveError::Malformed {
        format: ArchiveFormat::Zip,
        reason: e,
    };
    let mut archive = zip::ZipArchive::new(reader).map_err(|e| malformed(e.to_string()))?;
    let mut out = Vec::new();
    for i in 0..archive.len() {
        let mut file = archive.by_index(i).map_err(|e| malformed(e.to_string()))?;
        let name = file.name().to_owned();
        let unix = file.unix_mode();
        let size = file.size();
        let file_type = unix.map_or(0, |m| m & 0o170000);
        let kind = if file.is_dir() || file_type == 0o040000 {
            RawKind::Directory
        } else if file_type == 0o120000 {
            let mut target = String::new();
            file.read_to_string(&mut target)
                .map_err(|e| malformed(format!("symlink {name}: {e}")))?;
            RawKind::Symlink(target)
        } else if file_type == 0 || file_type == 0o100000 {
            RawKind::File
        } else {
            RawKind::Special("a device, FIFO or socket")
        };
        let digest = match kind {
            RawKind::File => {
                Some(digest_of(&mut file).map_err(|e| malformed(format!("{name}: {e}")))?)
            }
            _ => None,
        };
        let default_mode = if matches!(kind, RawKind::Directory) {
            0o755
        } else {
            0o644
        };
        out.push(Raw {
            name,
            kind,
            mode: unix.map_or(default_mode, |m| m & 0o7777),
            size,
            digest,
        });
    }
    Ok(out)
}

/// A name's clean path, refusing absolute paths and climbs out of the root.
fn clean_name(name: &str) -> Result<String, ArchiveError> {
    if name.starts_with('/') {
        return Err(unsafe_entry(name, "absolute path"));
    }
    if name.contains('\0') {
        return Err(unsafe_entry(name, "NUL byte in the name"));
    }
    clean_relative(name)
        .map(|parts| parts.join("/"))
        .ok_or_else(|| unsafe_entry(name, "path leaves the archive root (..)"))
}

/// Applies the rules of the module documentation.
fn check(raw: Vec<Raw>) -> Result<Vec<ArchiveEntry>, ArchiveError> {
    let mut entries = Vec::with_capacity(raw.len());
    for r in raw {
        let path = clean_name(&r.name)?;
        let kind = match r.kind {
            RawKind::File => EntryKind::File,
            RawKind::Directory => EntryKind::Directory,
            RawKind::Special(what) => {
                return Err(unsafe_entry(
                    &r.name,
                    format!("{what} is not allowed in a build archive"),
                ));
            }
            RawKind::Symlink(target) => {
                if target.starts_with('/') {
                    return Err(unsafe_entry(
                        &r.name,
                        format!("symlink to the absolute path {target:?}"),
                    ));
                }
                let parent = path.rsplit_once('/').map_or("", |(p, _)| p);
                if clean_relative(&format!("{parent}/{target}")).is_none() {
                    return Err(unsafe_entry(
                        &r.name,
                        format!("symlink target {target:?} leaves the archive root"),
                    ));
                }
                EntryKind::Symlink { target }
            }
            RawKind::HardLink(target) => {
                let clean = clean_name(&target).map_err(|_| {
                    unsafe_entry(
                        &r.name,
                        format!("hard link to {target:?}, outside the archive"),
                    )
                })?;
                EntryKind::HardLink { target: clean }
            }
        };
        entries.push(ArchiveEntry {
            path,
            kind,
            mode: r.mode,
            size: r.size,
            digest: r.digest,
        });
    }
    // Nothing may be written through a link.
    let links: HashSet<&str> = entries
        .iter()
        .filter(|e| matches!(e.kind, EntryKind::Symlink { .. }))
        .map(|e| e.path.as_str())
        .collect();
    for e in &entries {
        let below = |target: &str| {
            let mut prefix = String::new();
            for part in target.split('/') {
                if !prefix.is_empty() && links.contains(prefix.as_str()) {
                    return Some(prefix);
                }
                if !prefix.is_empty() {
                    prefix.push('/');
                }
                prefix.push_str(part);
            }
            None
        };
        if let Some(link) = below(&e.path) {
            return Err(unsafe_entry(
                &e.path,
                format!("it is below the symlink {link:?}"),
            ));
        }
        if let EntryKind::HardLink { target } = &e.kind
            && let Some(link) =
                below(target).or_else(|| links.contains(target.as_str()).then(|| target.clone()))
        {
            return Err(unsafe_entry(
                &e.path,
                format!("hard link through the symlink {link:?}"),
            ));
        }
    }
    Ok(entries)
}

impl ArchiveLookup for ArchiveIndex {
    fn files_under(&self, path: &str) -> Vec<ArchiveFile> {
        // The last entry of a path wins, as when extracting.
        let mut latest: BTreeMap<&str, &ArchiveEntry> = BTreeMap::new();
        for e in &self.entries {
            latest.insert(&e.path, e);
        }
        let digest_of_path = |p: &str| latest.get(p).and_then(|e| e.digest);
        latest
            .values()
            .filter(|e| {
                path.is_empty() || e.path == path || e.path.starts_with(&format!("{path}/"))
            })
            .filter_map(|e| {
                let digest = match &e.kind {
                    EntryKind::File => e.digest?,
                    EntryKind::Symlink { target } => Sha256::digest(target.as_bytes()).into(),
                    EntryKind::HardLink { target } => digest_of_path(target)?,
                    EntryKind::Directory => return None,
                };
                Some(ArchiveFile {
                    path: e.path.clone(),
                    mode: e.mode,
                    digest,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Cursor, Write};

    /// A tar built by hand so that unsafe names get in (the `tar` crate's
    /// builder refuses some of them).
    fn tar_of(entries: &[TarEntry<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, kind, link, data) in entries {
            let mut h = tar::Header::new_ustar();
            h.as_mut_bytes()[..name.len()].copy_from_slice(name.as_bytes());
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
            if !link.is_empty() {
                h.as_ustar_mut().unwrap().linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
            h.set_cksum();
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.resize(out.len() + 1024, 0);
        out
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    /// (name, unix mode with type bits, content)
    fn zip_of(entries: &[(&str, u32, &[u8])]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, mode, data) in entries {
            let options = zip::write::SimpleFileOptions::default().unix_permissions(*mode);
            if mode & 0o170000 == 0o120000 {
                w.add_symlink(*name, std::str::from_utf8(data).unwrap(), options)
                    .unwrap();
            } else if name.ends_with('/') {
                w.add_directory(*name, options).unwrap();
            } else {
                w.start_file(*name, options).unwrap();
                w.write_all(data).unwrap();
            }
        }
        w.finish().unwrap().into_inner()
    }

    use tar::EntryType as T;

    /// (name, type, link target, content) of a hand-made tar entry.
    type TarEntry<'a> = (&'a str, T, &'a str, &'a [u8]);

    fn refused(bytes: Vec<u8>) -> (String, String) {
        match inspect(Cursor::new(bytes)) {
            Err(ArchiveError::Unsafe { entry, reason }) => (entry, reason),
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn a_safe_tar_is_listed_with_digests_in_every_format() {
        let plain = tar_of(&[
            ("src/", T::Directory, "", b""),
            ("src/main.py", T::Regular, "", b"print(1)"),
            ("src/current", T::Symlink, "main.py", b""),
            ("src/up", T::Symlink, "../README", b""),
            ("README", T::Regular, "", b"hello"),
            ("again", T::Link, "README", b""),
        ]);
        for bytes in [plain.clone(), gz(&plain)] {
            let index = inspect(Cursor::new(bytes)).unwrap();
            let paths: Vec<&str> = index.entries.iter().map(|e| e.path.as_str()).collect();
            assert_eq!(
                paths,
                [
                    "src",
                    "src/main.py",
                    "src/current",
                    "src/up",
                    "README",
                    "again"
                ]
            );
            let main = &index.entries[1];
            assert_eq!(main.digest, Some(Sha256::digest(b"print(1)").into()));
            let files = index.files_under("src");
            assert_eq!(files.len(), 3);
            let again = index.files_under("again");
            assert_eq!(again[0].digest, <[u8; 32]>::from(Sha256::digest(b"hello")));
        }
        assert_eq!(
            inspect(Cursor::new(gz(&plain))).unwrap().format,
            ArchiveFormat::TarGz
        );
    }

    #[test]
    fn tar_traversal_and_escapes_are_refused_naming_the_entry() {
        let cases: Vec<(Vec<TarEntry<'_>>, &str, &str)> = vec![
            (
                vec![("../evil", T::Regular, "", b"x")],
                "../evil",
                "leaves the archive root",
            ),
            (
                vec![("a/../../evil", T::Regular, "", b"x")],
                "a/../../evil",
                "leaves the archive root",
            ),
            (
                vec![("/etc/passwd", T::Regular, "", b"x")],
                "/etc/passwd",
                "absolute path",
            ),
            (
                vec![("link", T::Symlink, "/etc", b"")],
                "link",
                "absolute path \"/etc\"",
            ),
            (
                vec![("a/link", T::Symlink, "../../x", b"")],
                "a/link",
                "leaves the archive root",
            ),
            (
                vec![("up", T::Symlink, "..", b"")],
                "up",
                "leaves the archive root",
            ),
            (
                vec![
                    ("d", T::Symlink, "sub", b""),
                    ("d/file", T::Regular, "", b"x"),
                ],
                "d/file",
                "below the symlink \"d\"",
            ),
            (
                vec![("h", T::Link, "../outside", b"")],
                "h",
                "outside the archive",
            ),
            (vec![("null", T::Char, "", b"")], "null", "a device"),
            (vec![("pipe", T::Fifo, "", b"")], "pipe", "a FIFO"),
        ];
        for (entries, entry, reason) in cases {
            let (e, r) = refused(tar_of(&entries));
            assert_eq!(e, entry);
            assert!(r.contains(reason), "{entry}: {r}");
            let (e2, _) = refused(gz(&tar_of(&entries)));
            assert_eq!(e2, entry, "gzip changes nothing");
        }
    }

    #[test]
    fn zip_entries_are_checked_the_same_way() {
        let ok = zip_of(&[
            ("app/", 0o040755, b""),
            ("app/run.sh", 0o100755, b"#!/bin/sh\n"),
            ("app/link", 0o120777, b"run.sh"),
        ]);
        let index = inspect(Cursor::new(ok)).unwrap();
        assert_eq!(index.format, ArchiveFormat::Zip);
        assert_eq!(index.entries[1].mode, 0o755);
        assert_eq!(
            index.entries[2].kind,
            EntryKind::Symlink {
                target: "run.sh".into()
            }
        );
        assert_eq!(index.files_under("app").len(), 2);

        let (e, r) = refused(zip_of(&[("../../etc/cron.d/x", 0o100644, b"x")]));
        assert_eq!(
            (e.as_str(), r.contains("leaves")),
            ("../../etc/cron.d/x", true)
        );
        let (e, r) = refused(zip_of(&[("/abs", 0o100644, b"x")]));
        assert_eq!((e.as_str(), r.as_str()), ("/abs", "absolute path"));
        let (e, r) = refused(zip_of(&[("l", 0o120777, b"../../etc/shadow")]));
        assert_eq!(e, "l");
        assert!(r.contains("leaves the archive root"), "{r}");
        let (e, _) = refused(zip_of(&[("l", 0o120777, b"/etc/shadow")]));
        assert_eq!(e, "l");
        let (e, _) = refused(zip_of(&[("l", 0o120777, b"sub"), ("l/x", 0o100644, b"x")]));
        assert_eq!(e, "l/x");
    }

    #[test]
    fn garbage_is_not_an_archive() {
        assert!(matches!(
            inspect(Cursor::new(b"hello world".to_vec())),
            Err(ArchiveError::UnknownFormat)
        ));
        let mut truncated = gz(&tar_of(&[("a", T::Regular, "", &[7u8; 4096])]));
        truncated.truncate(truncated.len() / 2);
        assert!(matches!(
            inspect(Cursor::new(truncated)),
            Err(ArchiveError::Malformed { .. })
        ));
        assert!(inspect(Cursor::new(b"PK\x03\x04garbage".to_vec())).is_err());
    }
}
