//! Identifiers and secrets: random ids with a readable prefix, random
//! tokens, and the SHA-256 digests under which tokens are stored.

use rand::Rng;
use rand::distr::Alphanumeric;
use sha2::{Digest, Sha256};

/// `prefix` + 16 lowercase hex characters (64 random bits). Capsule ids end
/// up in host names (`{port}-{id}.{domain}`), so they stay DNS-label safe.
pub fn new_id(prefix: &str) -> String {
    let n: u64 = rand::rng().random();
    format!("{prefix}{n:016x}")
}

/// A random alphanumeric secret of `len` characters.
pub fn new_secret(len: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// The digest a token is stored and looked up under.
pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_prefixed_and_dns_safe() {
        let id = new_id("sb-");
        assert!(id.starts_with("sb-"));
        assert_eq!(id.len(), 19);
        assert!(
            id.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
        assert_ne!(new_id("sb-"), new_id("sb-"));
    }

    #[test]
    fn hashes_are_stable_and_distinct() {
        assert_eq!(token_hash("a"), token_hash("a"));
        assert_ne!(token_hash("a"), token_hash("b"));
        assert_eq!(new_secret(40).len(), 40);
    }
}
