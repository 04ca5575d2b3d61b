//! Decoding of `struct uffd_msg`: what the kernel tells the page server.
//!
//! A userfaultfd read yields 32-byte messages. Page faults are the common case;
//! the others (`REMOVE`, `UNMAP`, `REMAP`, `FORK`) describe changes to the
//! faulting process's address space, which Firecracker's balloon produces after a
//! restore. An unknown code is reported, never fatal.

use std::os::fd::OwnedFd;

use crate::sys::{self, MSG_SIZE, event};

/// One message read from a userfaultfd.
#[derive(Debug)]
pub enum Event {
    /// A thread touched a missing page at `addr` (page-aligned by the kernel).
    PageFault { addr: u64, write: bool },
    /// The process forked; the child's memory faults arrive on `uffd`.
    Fork { uffd: OwnedFd },
    /// `mremap` moved `[from, from + len)` to `to`.
    Remap { from: u64, to: u64, len: u64 },
    /// `madvise(MADV_DONTNEED/MADV_REMOVE)` dropped `[start, end)`.
    Remove { start: u64, end: u64 },
    /// `munmap` removed `[start, end)`.
    Unmap { start: u64, end: u64 },
    /// A message code this version does not know.
    Unknown(u8),
}

fn word(msg: &[u8; MSG_SIZE], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&msg[at..at + 8]);
    u64::from_ne_bytes(b)
}

impl Event {
    /// Decodes one message. `FORK` carries a descriptor the kernel installed in
    /// our table during the read, which this takes ownership of.
    pub fn decode(msg: &[u8; MSG_SIZE]) -> Self {
        // Layout: u8 event, 7 reserved bytes, then the union at offset 8.
        match msg[0] {
            event::PAGEFAULT => Event::PageFault {
                addr: word(msg, 16),
                write: word(msg, 8) & sys::PAGEFAULT_FLAG_WRITE != 0,
            },
            event::FORK => {
                let mut b = [0u8; 4];
                b.copy_from_slice(&msg[8..12]);
                Event::Fork {
                    uffd: sys::adopt_fd(i32::from_ne_bytes(b)),
                }
            }
            event::REMAP => Event::Remap {
                from: word(msg, 8),
                to: word(msg, 16),
                len: word(msg, 24),
            },
            event::REMOVE => Event::Remove {
                start: word(msg, 8),
                end: word(msg, 16),
            },
            event::UNMAP => Event::Unmap {
                start: word(msg, 8),
                end: word(msg, 16),
            },
            other => Event::Unknown(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(code: u8, words: [u64; 3]) -> [u8; MSG_SIZE] {
        let mut m = [0u8; MSG_SIZE];
        m[0] = code;
        for (i, w) in words.iter().enumerate() {
            m[8 + i * 8..16 + i * 8].copy_from_slice(&w.to_ne_bytes());
        }
        m
    }

    #[test]
    fn decodes_every_known_event() {
        assert!(matches!(
            Event::decode(&msg(event::PAGEFAULT, [1, 0x7000, 0])),
            Event::PageFault {
                addr: 0x7000,
                write: true
            }
        ));
        assert!(matches!(
            Event::decode(&msg(event::REMAP, [0x1000, 0x9000, 0x2000])),
            Event::Remap {
                from: 0x1000,
                to: 0x9000,
                len: 0x2000
            }
        ));
        assert!(matches!(
            Event::decode(&msg(event::REMOVE, [0x1000, 0x3000, 0])),
            Event::Remove {
                start: 0x1000,
                end: 0x3000
            }
        ));
        assert!(matches!(
            Event::decode(&msg(event::UNMAP, [0x1000, 0x3000, 0])),
            Event::Unmap {
                start: 0x1000,
                end: 0x3000
            }
        ));
        assert!(matches!(
            Event::decode(&msg(0x42, [0; 3])),
            Event::Unknown(0x42)
        ));
    }
}
