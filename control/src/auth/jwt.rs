//! Login sessions: HS256 JWTs naming the user and the team they act for.
//! The role is not in the token; it is read from the database on each
//! request, so a demotion or removal takes effect at once.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    pub sub: String,
    pub team_id: String,
    pub email: String,
    pub name: String,
    pub iat: i64,
    pub exp: i64,
}

#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    ttl_secs: i64,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeys")
            .field("ttl_secs", &self.ttl_secs)
            .finish()
    }
}

impl JwtKeys {
    pub fn new(secret: &str, ttl_secs: u64) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            ttl_secs: i64::try_from(ttl_secs).unwrap_or(i64::MAX / 2),
        }
    }

    pub fn issue(&self, user_id: &str, team_id: &str, email: &str, name: &str) -> String {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: user_id.into(),
            team_id: team_id.into(),
            email: email.into(),
            name: name.into(),
            iat: now,
            exp: now.saturating_add(self.ttl_secs),
        };
        // HS256 with an in-memory key cannot fail to sign.
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .unwrap_or_default()
    }

    /// The claims of a valid, unexpired token.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .ok()
            .map(|d| d.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_and_verify() {
        let keys = JwtKeys::new("secret", 60);
        let t = keys.issue("u1", "t1", "a@b.c", "A");
        let c = keys.verify(&t).unwrap();
        assert_eq!((c.sub.as_str(), c.team_id.as_str()), ("u1", "t1"));
        assert!(JwtKeys::new("other", 60).verify(&t).is_none(), "wrong key");
        assert!(keys.verify("garbage").is_none());
        let mut tampered = t.clone();
        tampered.insert(t.len() / 2, 'x');
        assert!(keys.verify(&tampered).is_none());
    }

    #[test]
    fn expired_tokens_are_refused() {
        let keys = JwtKeys::new("secret", 0);
        let t = keys.issue("u1", "t1", "a@b.c", "A");
        std::thread::sleep(std::time::Duration::from_millis(1100));
        assert!(keys.verify(&t).is_none());
    }
}
