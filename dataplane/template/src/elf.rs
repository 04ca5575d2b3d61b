//! Just enough ELF reading to tell a static executable from a dynamic one
//! (and which program interpreter the latter needs).

use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// The `PT_INTERP` path of a 64-bit little-endian ELF executable, or `None`
/// for a statically linked one. Anything else is an error.
pub fn interpreter(path: &Path) -> io::Result<Option<PathBuf>> {
    let mut head = Vec::new();
    std::fs::File::open(path)?
        .take(64 * 1024)
        .read_to_end(&mut head)?;
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not a 64-bit ELF", path.display()),
        )
    };
    if !head.starts_with(b"\x7fELF\x02\x01") {
        return Err(bad());
    }
    let bytes = |o: usize, n: usize| head.get(o..o + n).ok_or_else(bad);
    let num = |o: usize, n: usize| -> io::Result<usize> {
        let mut a = [0u8; 8];
        a[..n].copy_from_slice(bytes(o, n)?);
        Ok(u64::from_le_bytes(a) as usize)
    };
    // e_phoff at 0x20, e_phentsize at 0x36, e_phnum at 0x38.
    let (phoff, size, count) = (num(0x20, 8)?, num(0x36, 2)?, num(0x38, 2)?);
    for i in 0..count {
        let ph = phoff + i * size;
        if num(ph, 4)? == 3 {
            // PT_INTERP: p_offset at +8, p_filesz at +32; NUL-terminated.
            let (off, len) = (num(ph + 8, 8)?, num(ph + 32, 8)?);
            let raw = bytes(off, len)?;
            let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
            return Ok(Some(PathBuf::from(
                String::from_utf8_lossy(&raw[..end]).into_owned(),
            )));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_static_from_dynamic() {
        let ls = interpreter(Path::new("/bin/ls")).expect("ls");
        assert!(ls.is_some_and(|p| p.to_string_lossy().contains("ld-linux")));
        if Path::new("/bin/busybox").exists() {
            assert_eq!(
                interpreter(Path::new("/bin/busybox")).expect("busybox"),
                None
            );
        }
        assert!(interpreter(Path::new("/etc/passwd")).is_err());
    }
}
