//! A small script language that drives a [`Guest`] through the things a
//! restored VM does to its memory, checking every byte it reads.
//!
//! Steps are separated by commas; offsets and lengths are memory-file bytes
//! and take `k`/`m` suffixes (KiB, MiB):
//!
//! | step | does |
//! |---|---|
//! | `touch:ORDER[:OFF:LEN]` | read every mapped page (of the range) in ORDER (`seq`, `random`, `stride=N`) and compare it with the expected image |
//! | `write:OFF:LEN:BYTE` | write BYTE over the range (write faults) |
//! | `dontneed:OFF:LEN` | `madvise(MADV_DONTNEED)`: the range reads as zeros afterwards |
//! | `mremap:OFF:LEN` | move the range to a new address |
//! | `munmap:OFF:LEN` | unmap the range |
//! | `fork` | fork; the child reads and checks every mapped page, the parent waits |
//! | `pause` | print `paused` and wait for a line on standard input |

use std::io::{BufRead, Write};

use super::Guest;

/// One step of a script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Touch {
        order: Order,
        range: Option<(u64, u64)>,
    },
    Write {
        offset: u64,
        len: u64,
        byte: u8,
    },
    DontNeed {
        offset: u64,
        len: u64,
    },
    Remap {
        offset: u64,
        len: u64,
    },
    Unmap {
        offset: u64,
        len: u64,
    },
    Fork,
    Pause,
}

/// Order in which pages are touched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    Sequential,
    /// A fixed-seed shuffle, so runs are reproducible.
    Random,
    /// Pages 0, N, 2N, ..., then 1, N+1, ...: every page, N apart.
    Stride(u64),
}

fn size(s: &str) -> Result<u64, String> {
    let (digits, mult) = match s.as_bytes().last() {
        Some(b'k' | b'K') => (&s[..s.len() - 1], 1 << 10),
        Some(b'm' | b'M') => (&s[..s.len() - 1], 1 << 20),
        _ => (s, 1),
    };
    let n: u64 = digits.parse().map_err(|_| format!("bad size {s:?}"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} overflows"))
}

/// Parses a script (see the module docs).
pub fn parse(script: &str) -> Result<Vec<Step>, String> {
    script
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|step| {
            let parts: Vec<&str> = step.split(':').collect();
            let range = |at: usize| -> Result<(u64, u64), String> {
                match (parts.get(at), parts.get(at + 1)) {
                    (Some(o), Some(l)) => Ok((size(o)?, size(l)?)),
                    _ => Err(format!("{step}: expected OFFSET:LENGTH")),
                }
            };
            Ok(match parts[0] {
                "touch" => {
                    let order = match parts.get(1).copied() {
                        Some("seq") => Order::Sequential,
                        Some("random") => Order::Random,
                        Some(s) if s.starts_with("stride=") => Order::Stride(
                            s["stride=".len()..]
                                .parse()
                                .map_err(|_| format!("bad stride in {step}"))?,
                        ),
                        _ => return Err(format!("{step}: order is seq, random or stride=N")),
                    };
                    let range = if parts.len() > 2 {
                        Some(range(2)?)
                    } else {
                        None
                    };
                    Step::Touch { order, range }
                }
                "write" => {
                    let (offset, len) = range(1)?;
                    let byte = parts
                        .get(3)
                        .and_then(|b| b.parse().ok())
                        .ok_or(format!("{step}: byte"))?;
                    Step::Write { offset, len, byte }
                }
                "dontneed" => range(1).map(|(offset, len)| Step::DontNeed { offset, len })?,
                "mremap" => range(1).map(|(offset, len)| Step::Remap { offset, len })?,
                "munmap" => range(1).map(|(offset, len)| Step::Unmap { offset, len })?,
                "fork" => Step::Fork,
                "pause" => Step::Pause,
                other => return Err(format!("unknown step {other:?}")),
            })
        })
        .collect()
}

/// Pages of `pages` in `order`.
pub fn ordered(mut pages: Vec<u64>, order: Order) -> Vec<u64> {
    match order {
        Order::Sequential => pages,
        Order::Random => {
            let mut x = 0x9E37_79B9_7F4A_7C15u64;
            for i in (1..pages.len()).rev() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                pages.swap(i, (x % (i as u64 + 1)) as usize);
            }
            pages
        }
        Order::Stride(n) => {
            let n = n.max(1) as usize;
            (0..n)
                .flat_map(|start| {
                    pages
                        .iter()
                        .skip(start)
                        .step_by(n)
                        .copied()
                        .collect::<Vec<_>>()
                })
                .collect()
        }
    }
}

/// Runs `steps` against `guest`, checking reads against `expected` (the memory
/// image the guest should see), which the steps update (writes, dontneed).
/// Returns the number of pages checked.
pub fn run(guest: &mut Guest, expected: &mut [u8], steps: &[Step]) -> Result<u64, String> {
    let ps = guest.page_size().bytes();
    let mut checked = 0;
    for step in steps {
        match *step {
            Step::Touch { order, range } => {
                let pages = guest
                    .mapped_pages()
                    .into_iter()
                    .filter(|&p| range.is_none_or(|(o, l)| p >= o && p < o + l))
                    .collect();
                for page in ordered(pages, order) {
                    check_page(guest, expected, page, ps)?;
                    checked += 1;
                }
            }
            Step::Write { offset, len, byte } => {
                let data = vec![byte; len as usize];
                guest
                    .write(offset, &data)
                    .map_err(|e| format!("write: {e}"))?;
                slice(expected, offset, len)?.fill(byte);
            }
            Step::DontNeed { offset, len } => {
                guest
                    .dontneed(offset, len)
                    .map_err(|e| format!("madvise: {e}"))?;
                slice(expected, offset, len)?.fill(0);
            }
            Step::Remap { offset, len } => guest
                .remap(offset, len)
                .map_err(|e| format!("mremap: {e}"))?,
            Step::Unmap { offset, len } => guest
                .unmap(offset, len)
                .map_err(|e| format!("munmap: {e}"))?,
            Step::Fork => {
                let pages = ordered(guest.mapped_pages(), Order::Random);
                let code = guest
                    .fork_and(|| {
                        // The child: read-only checks, no allocation.
                        i32::from(!pages.iter().all(|&p| page_matches(guest, expected, p, ps)))
                    })
                    .map_err(|e| format!("fork: {e}"))?;
                if code != 0 {
                    return Err(format!(
                        "the forked child saw wrong memory (exit code {code})"
                    ));
                }
                checked += pages.len() as u64;
            }
            Step::Pause => {
                let mut out = std::io::stdout();
                writeln!(out, "paused")
                    .and_then(|()| out.flush())
                    .map_err(|e| e.to_string())?;
                let mut line = String::new();
                std::io::stdin()
                    .lock()
                    .read_line(&mut line)
                    .map_err(|e| e.to_string())?;
            }
        }
    }
    Ok(checked)
}

fn slice(expected: &mut [u8], offset: u64, len: u64) -> Result<&mut [u8], String> {
    expected
        .get_mut(offset as usize..(offset + len) as usize)
        .ok_or_else(|| format!("range {offset:#x}+{len:#x} is outside the memory file"))
}

fn page_matches(guest: &Guest, expected: &[u8], page: u64, ps: u64) -> bool {
    let want = expected.get(page as usize..(page + ps) as usize);
    guest.bytes(page, ps).is_some_and(|got| Some(got) == want)
}

fn check_page(guest: &Guest, expected: &[u8], page: u64, ps: u64) -> Result<(), String> {
    if page_matches(guest, expected, page, ps) {
        return Ok(());
    }
    let got = guest
        .bytes(page, ps)
        .ok_or_else(|| format!("page {page:#x} is not mapped"))?;
    let want = expected
        .get(page as usize..(page + ps) as usize)
        .ok_or("page outside the expected image")?;
    let at = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(0);
    Err(format!(
        "byte mismatch at memory offset {:#x}: got {:#04x}, expected {:#04x}",
        page + at as u64,
        got[at],
        want[at]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_step() {
        let steps = parse("touch:seq, touch:stride=3:0:64k,write:4k:4k:7,dontneed:1m:8k,mremap:0:8k,munmap:8k:4k,fork,pause")
            .expect("valid");
        assert_eq!(steps.len(), 8);
        assert_eq!(
            steps[1],
            Step::Touch {
                order: Order::Stride(3),
                range: Some((0, 64 << 10))
            }
        );
        assert_eq!(
            steps[2],
            Step::Write {
                offset: 4096,
                len: 4096,
                byte: 7
            }
        );
        assert!(parse("touch:sideways").is_err());
        assert!(parse("dontneed:1").is_err());
        assert!(parse("explode").is_err());
    }

    #[test]
    fn orders_visit_every_page_once() {
        let pages: Vec<u64> = (0..100).collect();
        for order in [Order::Sequential, Order::Random, Order::Stride(7)] {
            let mut got = ordered(pages.clone(), order);
            assert_eq!(got.len(), 100);
            if order == Order::Random {
                assert_ne!(got, pages);
            }
            got.sort_unstable();
            assert_eq!(got, pages);
        }
    }
}
