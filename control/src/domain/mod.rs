//! The domain layer: what the control plane lets whom do. One module per
//! family of resources; each checks the caller's permissions (a
//! [`crate::auth::Principal`]), validates input, calls [`crate::db`] (and
//! the lifecycle service for capsules), and fails with its own error type.
//! The REST layer ([`crate::api`]) parses a request, calls one function
//! here and renders the result; an extension's routes can do the same.
//!
//! - [`users`]: accounts and sessions (`UserError`).
//! - [`teams`]: teams, members, roles (`TeamError`).
//! - [`keys`]: API keys (`KeyError`).
//! - [`hosts`]: host records, registration, heartbeats, tags (`HostError`).
//! - [`capsules`]: capsules, their usage, and what runs in them: commands
//!   and files through envd (`CapsuleError`).
//! - [`templates`]: snapshots and platform templates (`TemplateError`).
//! - [`builds`]: template builds (`BuildError`).
//! - [`audit`]: the audit trail (`AuditError`).

pub mod audit;
pub mod builds;
pub mod capsules;
pub mod hosts;
pub mod keys;
pub mod teams;
pub mod templates;
pub mod users;

/// Checks a display name: 1 to 100 printable characters, trimmed.
pub fn valid_name(name: &str, what: &str) -> Result<String, String> {
    let n = name.trim();
    if n.is_empty() || n.chars().count() > 100 || n.chars().any(char::is_control) {
        return Err(format!("{what} must be 1 to 100 printable characters"));
    }
    Ok(n.to_string())
}

/// `[a-zA-Z0-9][a-zA-Z0-9._-]{0,max-1}` (template names, tags, metadata
/// keys).
pub fn is_slug(s: &str, max: usize) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && s.len() <= max
        && chars.all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("", "name").is_err());
        assert!(valid_name(&"x".repeat(101), "name").is_err());
        assert_eq!(valid_name(" Ann ", "name").unwrap(), "Ann");
    }

    #[test]
    fn slugs() {
        assert!(is_slug("a.b-c_1", 64));
        assert!(!is_slug("-a", 64));
        assert!(!is_slug("a/b", 64));
        assert!(!is_slug(&"a".repeat(65), 64));
    }
}
