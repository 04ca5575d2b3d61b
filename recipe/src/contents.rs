//! The contents COPY needs from a build archive.
//!
//! An archive is checked and listed once, at submission, by
//! [`crate::archive::inspect`] (which refuses entries escaping its
//! root); that listing decides what each COPY reads. Here the worker reads
//! the bytes of just those files, in one pass over the archive, with a cap
//! on their total.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

use bytes::Bytes;

use crate::archive::ArchiveFormat;
use crate::clean_relative;

#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("the build archive is not a tar, tar.gz or zip file")]
    UnknownFormat,
    #[error("reading the build archive: {0}")]
    Damaged(String),
    #[error("the files COPY reads hold more than {0} bytes")]
    TooLarge(u64),
    #[error("{0:?} is not in the build archive")]
    Missing(String),
}

/// The contents of the regular files `wanted` (clean paths; the last entry
/// of a path wins, as when extracting), at most `cap` bytes in all.
pub fn read_files(
    archive: &[u8],
    wanted: &BTreeSet<String>,
    cap: u64,
) -> Result<BTreeMap<String, Bytes>, ContentError> {
    let mut out = BTreeMap::new();
    if wanted.is_empty() {
        return Ok(out);
    }
    let mut budget = Budget { left: cap, cap };
    match ArchiveFormat::detect(archive).ok_or(ContentError::UnknownFormat)? {
        ArchiveFormat::Tar => read_tar(archive, wanted, &mut budget, &mut out)?,
        ArchiveFormat::TarGz => read_tar(
            flate2::read::GzDecoder::new(archive),
            wanted,
            &mut budget,
            &mut out,
        )?,
        ArchiveFormat::Zip => read_zip(archive, wanted, &mut budget, &mut out)?,
    }
    match wanted.iter().find(|p| !out.contains_key(*p)) {
        Some(missing) => Err(ContentError::Missing(missing.clone())),
        None => Ok(out),
    }
}

struct Budget {
    left: u64,
    cap: u64,
}

impl Budget {
    /// All of `r`, counted against the budget.
    fn read(&mut self, r: impl Read) -> Result<Bytes, ContentError> {
        let mut buf = Vec::new();
        let n = r
            .take(self.left.saturating_add(1))
            .read_to_end(&mut buf)
            .map_err(|e| ContentError::Damaged(e.to_string()))? as u64;
        if n > self.left {
            return Err(ContentError::TooLarge(self.cap));
        }
        self.left -= n;
        Ok(Bytes::from(buf))
    }
}

fn clean(name: &str) -> Option<String> {
    clean_relative(name).map(|parts| parts.join("/"))
}

fn read_tar(
    r: impl Read,
    wanted: &BTreeSet<String>,
    budget: &mut Budget,
    out: &mut BTreeMap<String, Bytes>,
) -> Result<(), ContentError> {
    let damaged = |e: std::io::Error| ContentError::Damaged(e.to_string());
    let mut tar = tar::Archive::new(r);
    for entry in tar.entries().map_err(damaged)? {
        let mut entry = entry.map_err(damaged)?;
        let regular = matches!(
            entry.header().entry_type(),
            tar::EntryType::Regular | tar::EntryType::Continuous
        );
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        if let Some(path) = clean(&name).filter(|p| regular && wanted.contains(p)) {
            let data = budget.read(&mut entry)?;
            out.insert(path, data);
        }
    }
    Ok(())
}

fn read_zip(
    bytes: &[u8],
    wanted: &BTreeSet<String>,
    budget: &mut Budget,
    out: &mut BTreeMap<String, Bytes>,
) -> Result<(), ContentError> {
    let damaged = |e: zip::result::ZipError| ContentError::Damaged(e.to_string());
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(damaged)?;
    for i in 0..zip.len() {
        let mut f = zip.by_index(i).map_err(damaged)?;
        let file_type = f.unix_mode().map_or(0, |m| m & 0o170000);
        let regular = !f.is_dir() && (file_type == 0 || file_type == 0o100000);
        if let Some(path) = clean(f.name()).filter(|p| regular && wanted.contains(p)) {
            let data = budget.read(&mut f)?;
            out.insert(path, data);
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A tar of `(path, content)` regular files.
    pub fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, content) in files {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(content.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, path, *content).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn wanted(paths: &[&str]) -> BTreeSet<String> {
        paths.iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn reads_only_what_is_wanted() {
        let tar = tar_of(&[("./a/b.txt", b"B"), ("c.txt", b"C"), ("a/b.txt", b"B2")]);
        let got = read_files(&tar, &wanted(&["a/b.txt"]), 1 << 20).unwrap();
        // The later entry of a path wins.
        assert_eq!(got.len(), 1);
        assert_eq!(got["a/b.txt"], Bytes::from_static(b"B2"));
        assert!(matches!(
            read_files(&tar, &wanted(&["nope"]), 1 << 20),
            Err(ContentError::Missing(p)) if p == "nope"
        ));
    }

    #[test]
    fn reads_gzip_and_zip() {
        let tar = tar_of(&[("x", b"X")]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        let got = read_files(&gz.finish().unwrap(), &wanted(&["x"]), 1 << 20).unwrap();
        assert_eq!(got["x"], Bytes::from_static(b"X"));

        let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        z.start_file("d/y", zip::write::SimpleFileOptions::default())
            .unwrap();
        std::io::Write::write_all(&mut z, b"Y").unwrap();
        let bytes = z.finish().unwrap().into_inner();
        let got = read_files(&bytes, &wanted(&["d/y"]), 1 << 20).unwrap();
        assert_eq!(got["d/y"], Bytes::from_static(b"Y"));
    }

    #[test]
    fn caps_the_total() {
        let big = vec![7u8; 4096];
        let tar = tar_of(&[("big", &big)]);
        assert!(matches!(
            read_files(&tar, &wanted(&["big"]), 1024),
            Err(ContentError::TooLarge(1024))
        ));
        assert!(matches!(
            read_files(b"plain", &wanted(&["x"]), 1),
            Err(ContentError::UnknownFormat)
        ));
    }
}
