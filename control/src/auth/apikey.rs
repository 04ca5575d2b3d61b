//! API keys: `wrn_` + 40 random characters. Only a SHA-256 digest is
//! stored; the key itself is returned once, when it is created.

use crate::ids;

pub const PREFIX: &str = "wrn_";

/// A fresh key and the digest to store.
pub fn generate() -> (String, Vec<u8>) {
    let key = format!("{PREFIX}{}", ids::new_secret(40));
    let hash = ids::token_hash(&key);
    (key, hash)
}

/// What lists show of a key: its first characters.
pub fn display_prefix(key: &str) -> String {
    let head: String = key.chars().take(PREFIX.len() + 8).collect();
    format!("{head}...")
}

pub fn looks_like_key(token: &str) -> bool {
    token.starts_with(PREFIX)
}

#[cfg(test)]
mod tests {
    #[test]
    fn generated_keys_hash_to_their_digest() {
        let (k, h) = super::generate();
        assert!(super::looks_like_key(&k));
        assert_eq!(k.len(), 44);
        assert_eq!(crate::ids::token_hash(&k), h);
        assert_eq!(super::display_prefix(&k).len(), 15);
    }
}
