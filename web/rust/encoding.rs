//! Choosing the encoding of a response from `Accept-Encoding` among the
//! twins the build wrote (`.br`, `.gz`).

use axum::http::{HeaderMap, header};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Brotli,
    Gzip,
    Identity,
}

impl Encoding {
    pub fn name(self) -> &'static str {
        match self {
            Self::Brotli => "br",
            Self::Gzip => "gzip",
            Self::Identity => "identity",
        }
    }

    /// The file name suffix of the twin in this encoding.
    pub fn suffix(self) -> &'static str {
        match self {
            Self::Brotli => ".br",
            Self::Gzip => ".gz",
            Self::Identity => "",
        }
    }

    /// Brotli, else gzip, when the client accepts it (q > 0) and the twin
    /// exists; else the file as it is.
    pub fn choose(headers: &HeaderMap, has_twin: impl Fn(&str) -> bool) -> Self {
        let accepted: Vec<&str> = headers
            .get_all(header::ACCEPT_ENCODING)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|item| {
                let mut parts = item.split(';');
                let name = parts.next()?.trim();
                let refused = parts.any(|p| {
                    p.trim()
                        .strip_prefix("q=")
                        .and_then(|q| q.trim().parse::<f32>().ok())
                        .is_some_and(|q| q <= 0.0)
                });
                (!refused).then_some(name)
            })
            .collect();
        [Self::Brotli, Self::Gzip]
            .into_iter()
            .find(|e| {
                accepted.iter().any(|a| a.eq_ignore_ascii_case(e.name())) && has_twin(e.suffix())
            })
            .unwrap_or(Self::Identity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn choose(accept: &str, twins: &[&str]) -> Encoding {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_str(accept).unwrap(),
        );
        Encoding::choose(&h, |s| twins.contains(&s))
    }

    #[test]
    fn negotiation() {
        assert_eq!(
            choose("gzip, deflate, br", &[".br", ".gz"]),
            Encoding::Brotli
        );
        assert_eq!(choose("gzip, deflate, br", &[".gz"]), Encoding::Gzip);
        assert_eq!(choose("gzip", &[".br", ".gz"]), Encoding::Gzip);
        assert_eq!(
            choose("br;q=0, gzip;q=0.5", &[".br", ".gz"]),
            Encoding::Gzip
        );
        assert_eq!(choose("identity", &[".br", ".gz"]), Encoding::Identity);
        assert_eq!(choose("GZIP", &[".gz"]), Encoding::Gzip);
        assert_eq!(
            Encoding::choose(&HeaderMap::new(), |_| true),
            Encoding::Identity
        );
    }
}
