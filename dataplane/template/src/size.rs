//! Sizes as operators write them, e.g. `WARREN_DEFAULT_ROOTFS_SIZE=5G`.
//!
//! A whole number with an optional unit: `K`, `M`, `G`, `T` are powers of
//! 1000 and `Ki`, `Mi`, `Gi`, `Ti` powers of 1024 (Kubernetes' reading),
//! a trailing `B` is allowed (`2GiB`), letters are case-insensitive and no
//! unit means bytes. `5G` is 5 000 000 000 bytes, `2Gi` is 2 147 483 648.

use std::fmt;

/// Why a size was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("empty size: write a number with a unit, e.g. 5G, 2Gi, 1000M or 512Mi")]
    Empty,
    #[error("size {0:?} does not start with a whole number (e.g. 5G, 2Gi, 1000M, 512Mi)")]
    NotANumber(String),
    #[error(
        "size {input:?} has an unknown unit {unit:?}: use K, M, G, T (powers of 1000) or Ki, Mi, Gi, Ti (powers of 1024)"
    )]
    UnknownUnit { input: String, unit: String },
    #[error("size {0:?} is too large")]
    TooLarge(String),
    #[error("size {input:?} is {bytes} bytes; at least {min} are needed")]
    TooSmall { input: String, bytes: u64, min: u64 },
}

/// A size in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Whole MiB, rounded up.
    pub fn mib_ceil(self) -> u64 {
        self.0.div_ceil(1 << 20)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 4] = [
            ("Ti", 1 << 40),
            ("Gi", 1 << 30),
            ("Mi", 1 << 20),
            ("Ki", 1 << 10),
        ];
        for (unit, scale) in UNITS {
            if self.0 >= scale && self.0 % scale == 0 {
                return write!(f, "{}{unit}", self.0 / scale);
            }
        }
        write!(f, "{}", self.0)
    }
}

impl std::str::FromStr for ByteSize {
    type Err = SizeError;
    fn from_str(s: &str) -> Result<Self, SizeError> {
        parse(s)
    }
}

/// Parses `input` (see the module documentation).
pub fn parse(input: &str) -> Result<ByteSize, SizeError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(SizeError::Empty);
    }
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(SizeError::NotANumber(input.to_owned()));
    }
    let (number, unit) = s.split_at(digits);
    let number: u64 = number
        .parse()
        .map_err(|_| SizeError::TooLarge(input.to_owned()))?;
    let unit_lower = unit.trim_start().to_ascii_lowercase();
    let unit_name = unit_lower.strip_suffix('b').unwrap_or(&unit_lower);
    let scale: u64 = match unit_name {
        "" => 1,
        "k" => 1_000,
        "m" => 1_000_000,
        "g" => 1_000_000_000,
        "t" => 1_000_000_000_000,
        "ki" => 1 << 10,
        "mi" => 1 << 20,
        "gi" => 1 << 30,
        "ti" => 1 << 40,
        _ => {
            return Err(SizeError::UnknownUnit {
                input: input.to_owned(),
                unit: unit.trim().to_owned(),
            });
        }
    };
    number
        .checked_mul(scale)
        .map(ByteSize)
        .ok_or_else(|| SizeError::TooLarge(input.to_owned()))
}

/// Parses `input` as a disk size of at least `min_mib` MiB and returns it
/// in whole MiB (rounded up).
pub fn parse_disk_mib(input: &str, min_mib: u32) -> Result<u32, SizeError> {
    let size = parse(input)?;
    let min = u64::from(min_mib) << 20;
    if size.0 < min {
        return Err(SizeError::TooSmall {
            input: input.to_owned(),
            bytes: size.0,
            min,
        });
    }
    u32::try_from(size.mib_ceil()).map_err(|_| SizeError::TooLarge(input.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_forms() {
        assert_eq!(parse("5G"), Ok(ByteSize(5_000_000_000)));
        assert_eq!(parse("2Gi"), Ok(ByteSize(2 << 30)));
        assert_eq!(parse("1000M"), Ok(ByteSize(1_000_000_000)));
        assert_eq!(parse("512Mi"), Ok(ByteSize(512 << 20)));
    }

    #[test]
    fn bytes_case_and_suffixes() {
        assert_eq!(parse("4096"), Ok(ByteSize(4096)));
        assert_eq!(parse("2gib"), Ok(ByteSize(2 << 30)));
        assert_eq!(parse(" 3 MiB "), Ok(ByteSize(3 << 20)));
        assert_eq!(parse("7k"), Ok(ByteSize(7000)));
        assert_eq!(parse("1Ti"), Ok(ByteSize(1 << 40)));
        assert_eq!(parse("1TB"), Ok(ByteSize(1_000_000_000_000)));
        assert_eq!(parse("0"), Ok(ByteSize(0)));
    }

    #[test]
    fn refusals_say_why() {
        assert_eq!(parse(""), Err(SizeError::Empty));
        assert_eq!(parse("  "), Err(SizeError::Empty));
        assert_eq!(parse("G5"), Err(SizeError::NotANumber("G5".into())));
        assert_eq!(parse("-5G"), Err(SizeError::NotANumber("-5G".into())));
        assert!(matches!(parse("1.5G"), Err(SizeError::UnknownUnit { unit, .. }) if unit == ".5G"));
        assert!(matches!(parse("5Gx"), Err(SizeError::UnknownUnit { .. })));
        assert!(matches!(
            parse("5 gigs"),
            Err(SizeError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse("99999999999999999999"),
            Err(SizeError::TooLarge(_))
        ));
        assert!(matches!(parse("20000000Ti"), Err(SizeError::TooLarge(_))));
        let e = parse("5Q").unwrap_err().to_string();
        assert!(e.contains("\"Q\"") && e.contains("Gi"), "{e}");
    }

    #[test]
    fn disk_sizes_in_mib() {
        assert_eq!(parse_disk_mib("2Gi", 16), Ok(2048));
        assert_eq!(parse_disk_mib("5G", 16), Ok(4769)); // 4768.37 MiB, rounded up
        assert_eq!(parse_disk_mib("512Mi", 16), Ok(512));
        assert!(matches!(
            parse_disk_mib("1Mi", 16),
            Err(SizeError::TooSmall { min, .. }) if min == 16 << 20
        ));
        assert!(parse_disk_mib("5000Ti", 16).is_err());
    }

    #[test]
    fn display_round_trips() {
        for s in ["2Gi", "512Mi", "3Ki", "1000"] {
            assert_eq!(parse(s).unwrap().to_string(), s);
        }
    }
}
