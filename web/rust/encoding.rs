//! The encodings a client takes (`Accept-Encoding`), among those the build
//! wrote twins in (`.br`, `.gz`).

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

    /// The compressed encodings the client accepts (q > 0), brotli first.
    pub fn accepted(headers: &HeaderMap) -> Vec<Self> {
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
            .filter(|e| accepted.iter().any(|a| a.eq_ignore_ascii_case(e.name())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn accepted(accept: &str) -> Vec<Encoding> {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_str(accept).unwrap(),
        );
        Encoding::accepted(&h)
    }

    #[test]
    fn negotiation() {
        use Encoding::{Brotli, Gzip};
        assert_eq!(accepted("gzip, deflate, br"), [Brotli, Gzip]);
        assert_eq!(accepted("gzip"), [Gzip]);
        assert_eq!(accepted("br;q=0, gzip;q=0.5"), [Gzip]);
        assert_eq!(accepted("identity"), []);
        assert_eq!(accepted("GZIP"), [Gzip]);
        assert_eq!(Encoding::accepted(&HeaderMap::new()), []);
    }
}
