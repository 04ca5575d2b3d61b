//! Firecracker's userfaultfd handshake: parsing, validation, and the socket read.
//!
//! When it restores a snapshot with the `Uffd` memory backend, Firecracker
//! connects to our Unix socket and sends one message: a JSON array with one object
//! per guest memory region (`base_host_virt_addr`, `size`, `offset` into the memory
//! file, `page_size`; older versions `page_size_kib`, also in bytes) and exactly
//! one descriptor, the userfaultfd, in `SCM_RIGHTS`. It keeps its end open.
//!
//! [`parse`] is pure (bytes in, validated regions out) so it can be fuzzed;
//! [`read_chunk`] is the non-blocking socket read the server drives.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use serde::{Deserialize, Serialize};

use crate::sys;

/// Largest handshake we accept. Firecracker's is a few hundred bytes.
pub const MAX_HANDSHAKE_BYTES: usize = 1 << 20;
/// Most regions we accept (Firecracker sends one to a few, more with hotplug slots).
pub const MAX_REGIONS: usize = 4096;

/// Guest page sizes Firecracker backs memory with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PageSize {
    /// 4 KiB base pages (anonymous private memory).
    Base,
    /// 2 MiB hugetlbfs pages (`huge_pages: "2M"`).
    Huge2M,
}

impl PageSize {
    /// The size in bytes.
    pub const fn bytes(self) -> u64 {
        match self {
            PageSize::Base => 4096,
            PageSize::Huge2M => 2 << 20,
        }
    }

    fn from_bytes(bytes: u64) -> Option<Self> {
        match bytes {
            4096 => Some(PageSize::Base),
            0x20_0000 => Some(PageSize::Huge2M),
            _ => None,
        }
    }
}

/// One validated guest memory region: `size` bytes at `base` in Firecracker's
/// address space, backed by `[offset, offset + size)` of the memory file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub base: u64,
    pub size: u64,
    pub offset: u64,
    pub page_size: PageSize,
}

/// A region as it appears on the wire. Unknown fields are ignored so a newer
/// Firecracker that adds one still restores.
#[derive(Debug, Deserialize, Serialize)]
struct WireRegion {
    base_host_virt_addr: u64,
    size: u64,
    offset: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    page_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    page_size_kib: Option<u64>,
}

/// Why a handshake was refused. The connection is closed; nothing else changes.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("handshake is not a JSON array of memory regions: {0}")]
    Json(#[from] serde_json::Error),
    #[error("handshake is larger than {MAX_HANDSHAKE_BYTES} bytes")]
    TooLarge,
    #[error("handshake lists no memory regions")]
    NoRegions,
    #[error("handshake lists {0} memory regions, at most {MAX_REGIONS} are accepted")]
    TooManyRegions(usize),
    #[error("region {index}: page_size {page_size} and page_size_kib {page_size_kib} disagree")]
    PageSizeMismatch {
        index: usize,
        page_size: u64,
        page_size_kib: u64,
    },
    #[error("region {index}: page size {bytes} is not supported (4096 or 2097152 bytes)")]
    UnsupportedPageSize { index: usize, bytes: u64 },
    #[error("region {index}: size is zero")]
    EmptyRegion { index: usize },
    #[error("region {index}: {field} {value:#x} is not a multiple of the page size {page_size}")]
    Misaligned {
        index: usize,
        field: &'static str,
        value: u64,
        page_size: u64,
    },
    #[error("region {index}: address or file range overflows")]
    Overflow { index: usize },
    #[error(
        "region {index}: file range {offset:#x}..{end:#x} does not fit the memory file ({memory_len} bytes)"
    )]
    OutsideMemoryFile {
        index: usize,
        offset: u64,
        end: u64,
        memory_len: u64,
    },
    #[error("regions {0} and {1} overlap in {2}")]
    Overlap(usize, usize, &'static str),
    #[error("handshake carried no file descriptor (the userfaultfd goes in SCM_RIGHTS)")]
    MissingFd,
    #[error("handshake carried {0} file descriptors, expected exactly one")]
    TooManyFds(usize),
    #[error("the descriptor sent is not a userfaultfd")]
    NotUserfaultfd,
    #[error("peer closed the connection before the handshake was complete")]
    Closed,
    #[error("no complete handshake within {0:?}")]
    Timeout(std::time::Duration),
    #[error("socket error during handshake: {0}")]
    Io(#[from] std::io::Error),
}

/// Parses and validates the JSON part of a handshake against a memory file of
/// `memory_len` bytes. Fails with [`HandshakeError::Json`] whose
/// `is_eof()` is true when the bytes are a valid prefix (more may follow).
pub fn parse(bytes: &[u8], memory_len: u64) -> Result<Vec<Region>, HandshakeError> {
    if bytes.len() > MAX_HANDSHAKE_BYTES {
        return Err(HandshakeError::TooLarge);
    }
    let wire: Vec<WireRegion> = serde_json::from_slice(bytes)?;
    if wire.is_empty() {
        return Err(HandshakeError::NoRegions);
    }
    if wire.len() > MAX_REGIONS {
        return Err(HandshakeError::TooManyRegions(wire.len()));
    }
    let regions = wire
        .iter()
        .enumerate()
        .map(|(index, w)| validate_region(index, w, memory_len))
        .collect::<Result<Vec<_>, _>>()?;
    check_disjoint(&regions, |r| r.base, "guest address space")?;
    check_disjoint(&regions, |r| r.offset, "the memory file")?;
    Ok(regions)
}

fn validate_region(
    index: usize,
    w: &WireRegion,
    memory_len: u64,
) -> Result<Region, HandshakeError> {
    // The oldest Firecracker versions sent neither field: they only had 4 KiB pages.
    let bytes = match (w.page_size, w.page_size_kib) {
        (Some(a), Some(b)) if a != b => {
            return Err(HandshakeError::PageSizeMismatch {
                index,
                page_size: a,
                page_size_kib: b,
            });
        }
        (Some(a), _) | (None, Some(a)) => a,
        (None, None) => PageSize::Base.bytes(),
    };
    let page_size =
        PageSize::from_bytes(bytes).ok_or(HandshakeError::UnsupportedPageSize { index, bytes })?;
    if w.size == 0 {
        return Err(HandshakeError::EmptyRegion { index });
    }
    let ps = page_size.bytes();
    for (field, value) in [
        ("base_host_virt_addr", w.base_host_virt_addr),
        ("size", w.size),
        ("offset", w.offset),
    ] {
        if value % ps != 0 {
            return Err(HandshakeError::Misaligned {
                index,
                field,
                value,
                page_size: ps,
            });
        }
    }
    w.base_host_virt_addr
        .checked_add(w.size)
        .ok_or(HandshakeError::Overflow { index })?;
    let end = w
        .offset
        .checked_add(w.size)
        .ok_or(HandshakeError::Overflow { index })?;
    if end > memory_len {
        return Err(HandshakeError::OutsideMemoryFile {
            index,
            offset: w.offset,
            end,
            memory_len,
        });
    }
    Ok(Region {
        base: w.base_host_virt_addr,
        size: w.size,
        offset: w.offset,
        page_size,
    })
}

fn check_disjoint(
    regions: &[Region],
    start: impl Fn(&Region) -> u64,
    space: &'static str,
) -> Result<(), HandshakeError> {
    let mut order: Vec<usize> = (0..regions.len()).collect();
    order.sort_by_key(|&i| start(&regions[i]));
    for pair in order.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        // No overflow: validate_region checked start + size for both spaces.
        if start(&regions[a]) + regions[a].size > start(&regions[b]) {
            return Err(HandshakeError::Overlap(a.min(b), a.max(b), space));
        }
    }
    Ok(())
}

/// Encodes regions the way Firecracker does (both page-size fields, in bytes).
pub fn encode(regions: &[Region]) -> Vec<u8> {
    let wire: Vec<WireRegion> = regions
        .iter()
        .map(|r| WireRegion {
            base_host_virt_addr: r.base,
            size: r.size,
            offset: r.offset,
            page_size: Some(r.page_size.bytes()),
            page_size_kib: Some(r.page_size.bytes()),
        })
        .collect();
    // Serializing plain integers into a Vec cannot fail.
    serde_json::to_vec(&wire).unwrap_or_default()
}

/// What one non-blocking read of the handshake socket produced.
#[derive(Debug)]
pub enum Chunk {
    /// Bytes (possibly none yet: would block) and any descriptors that came with them.
    Data { len: usize, fds: Vec<OwnedFd> },
    /// The peer closed its end.
    Eof,
}

/// Reads what is available from `sock` into `buf` without blocking, taking any
/// `SCM_RIGHTS` descriptors (close-on-exec). More than a few descriptors in one
/// message truncates the control data; that is reported as [`HandshakeError::TooManyFds`].
pub fn read_chunk(sock: BorrowedFd<'_>, buf: &mut [u8]) -> Result<Chunk, HandshakeError> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    const MAX_FDS: usize = 4;
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; MAX_FDS]);
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC;
    let msg = match recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut cmsg), flags) {
        Ok(msg) => msg,
        Err(nix::errno::Errno::EAGAIN) => {
            return Ok(Chunk::Data {
                len: 0,
                fds: Vec::new(),
            });
        }
        Err(e) => return Err(HandshakeError::Io(e.into())),
    };
    let mut fds = Vec::new();
    for c in msg.cmsgs().map_err(|e| HandshakeError::Io(e.into()))? {
        if let ControlMessageOwned::ScmRights(raw) = c {
            fds.extend(raw.into_iter().map(sys::adopt_fd));
        }
    }
    if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
        return Err(HandshakeError::TooManyFds(fds.len() + 1));
    }
    match msg.bytes {
        0 if fds.is_empty() => Ok(Chunk::Eof),
        len => Ok(Chunk::Data { len, fds }),
    }
}

/// Accumulates handshake bytes and descriptors until a complete, valid message.
#[derive(Debug, Default)]
pub struct Assembler {
    bytes: Vec<u8>,
    fds: Vec<OwnedFd>,
}

impl Assembler {
    /// Adds a chunk. Returns the regions and the userfaultfd once the JSON is
    /// complete and valid, `Ok(None)` while it is a valid prefix.
    pub fn push(
        &mut self,
        bytes: &[u8],
        fds: Vec<OwnedFd>,
        memory_len: u64,
    ) -> Result<Option<(Vec<Region>, OwnedFd)>, HandshakeError> {
        self.bytes.extend_from_slice(bytes);
        self.fds.extend(fds);
        if self.fds.len() > 1 {
            return Err(HandshakeError::TooManyFds(self.fds.len()));
        }
        let regions = match parse(&self.bytes, memory_len) {
            Ok(regions) => regions,
            Err(HandshakeError::Json(e)) if e.is_eof() => return Ok(None),
            Err(e) => return Err(e),
        };
        let uffd = self.fds.pop().ok_or(HandshakeError::MissingFd)?;
        if !sys::is_userfaultfd(std::os::fd::AsFd::as_fd(&uffd)) {
            return Err(HandshakeError::NotUserfaultfd);
        }
        Ok(Some((regions, uffd)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn one(json: &str) -> Result<Vec<Region>, HandshakeError> {
        parse(json.as_bytes(), 64 * MIB)
    }

    #[test]
    fn accepts_what_firecracker_sends() {
        let r = one(r#"[{"base_host_virt_addr":140000000000000,"size":33554432,"offset":0,"page_size":4096,"page_size_kib":4096}]"#)
            .expect("valid");
        assert_eq!(
            r,
            vec![Region {
                base: 140_000_000_000_000,
                size: 32 * MIB,
                offset: 0,
                page_size: PageSize::Base
            }]
        );
        let r = one(r#"[{"base_host_virt_addr":0,"size":2097152,"offset":2097152,"page_size_kib":2097152,"future":1}]"#)
            .expect("valid");
        assert_eq!(r[0].page_size, PageSize::Huge2M);
        let r =
            one(r#"[{"base_host_virt_addr":4096,"size":4096,"offset":0}]"#).expect("oldest form");
        assert_eq!(r[0].page_size, PageSize::Base);
    }

    #[test]
    fn encode_round_trips() {
        let regions = vec![
            Region {
                base: 0x7f00_0000_0000,
                size: 8 * MIB,
                offset: 0,
                page_size: PageSize::Base,
            },
            Region {
                base: 0x7f10_0000_0000,
                size: 4 * MIB,
                offset: 8 * MIB,
                page_size: PageSize::Huge2M,
            },
        ];
        assert_eq!(parse(&encode(&regions), 12 * MIB).expect("valid"), regions);
    }

    type Expect = fn(&HandshakeError) -> bool;

    #[test]
    fn rejects_bad_input_with_the_reason() {
        let cases: &[(&str, Expect)] = &[
            ("not json", |e| matches!(e, HandshakeError::Json(_))),
            ("{}", |e| matches!(e, HandshakeError::Json(_))),
            ("[]", |e| matches!(e, HandshakeError::NoRegions)),
            (r#"[{"size":4096,"offset":0}]"#, |e| {
                matches!(e, HandshakeError::Json(_))
            }),
            (
                r#"[{"base_host_virt_addr":-1,"size":4096,"offset":0}]"#,
                |e| matches!(e, HandshakeError::Json(_)),
            ),
            (r#"[{"base_host_virt_addr":0,"size":0,"offset":0}]"#, |e| {
                matches!(e, HandshakeError::EmptyRegion { index: 0 })
            }),
            (
                r#"[{"base_host_virt_addr":0,"size":4096,"offset":0,"page_size":8192}]"#,
                |e| matches!(e, HandshakeError::UnsupportedPageSize { bytes: 8192, .. }),
            ),
            (
                r#"[{"base_host_virt_addr":0,"size":4096,"offset":0,"page_size":4096,"page_size_kib":4}]"#,
                |e| matches!(e, HandshakeError::PageSizeMismatch { .. }),
            ),
            (
                r#"[{"base_host_virt_addr":100,"size":4096,"offset":0}]"#,
                |e| {
                    matches!(
                        e,
                        HandshakeError::Misaligned {
                            field: "base_host_virt_addr",
                            ..
                        }
                    )
                },
            ),
            (
                r#"[{"base_host_virt_addr":0,"size":4096,"offset":0,"page_size":2097152}]"#,
                |e| matches!(e, HandshakeError::Misaligned { field: "size", .. }),
            ),
            (
                r#"[{"base_host_virt_addr":0,"size":4096,"offset":67108864}]"#,
                |e| matches!(e, HandshakeError::OutsideMemoryFile { .. }),
            ),
            (
                r#"[{"base_host_virt_addr":18446744073709547520,"size":8192,"offset":0}]"#,
                |e| matches!(e, HandshakeError::Overflow { index: 0 }),
            ),
            (
                r#"[{"base_host_virt_addr":0,"size":8192,"offset":0},{"base_host_virt_addr":4096,"size":4096,"offset":8192}]"#,
                |e| matches!(e, HandshakeError::Overlap(0, 1, "guest address space")),
            ),
            (
                r#"[{"base_host_virt_addr":0,"size":8192,"offset":0},{"base_host_virt_addr":65536,"size":4096,"offset":4096}]"#,
                |e| matches!(e, HandshakeError::Overlap(0, 1, "the memory file")),
            ),
            (
                r#"[{"base_host_virt_addr":0,"size":4096,"offset":0}] x"#,
                |e| matches!(e, HandshakeError::Json(_)),
            ),
        ];
        for (json, expected) in cases {
            let err = one(json).expect_err(json);
            assert!(expected(&err), "{json}: unexpected error {err}");
            assert!(!err.to_string().is_empty());
        }
    }

    #[test]
    fn a_valid_prefix_asks_for_more_and_fds_are_checked() {
        let mut asm = Assembler::default();
        let full = br#"[{"base_host_virt_addr":0,"size":4096,"offset":0}]"#;
        assert!(
            asm.push(&full[..10], Vec::new(), MIB)
                .expect("prefix")
                .is_none()
        );
        let err = asm.push(&full[10..], Vec::new(), MIB).expect_err("no fd");
        assert!(matches!(err, HandshakeError::MissingFd));

        let file = std::fs::File::open("/proc/self/exe").expect("open");
        let mut asm = Assembler::default();
        let err = asm
            .push(full, vec![OwnedFd::from(file)], MIB)
            .expect_err("not a uffd");
        assert!(matches!(err, HandshakeError::NotUserfaultfd));
    }
}
