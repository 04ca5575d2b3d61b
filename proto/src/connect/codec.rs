//! Message codecs: protobuf binary (`proto`) and the proto3 JSON mapping
//! (`json`), chosen by the request's content type.

use bytes::Bytes;
use http::HeaderValue;

use super::{Code, ConnectError};

/// What a Connect message type must be: a prost message with pbjson serde.
pub trait Message:
    prost::Message + Default + serde::Serialize + serde::de::DeserializeOwned + Send + 'static
{
}

impl<T> Message for T where
    T: prost::Message + Default + serde::Serialize + serde::de::DeserializeOwned + Send + 'static
{
}

/// How messages are encoded on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    Proto,
    Json,
}

/// Unary RPCs (`application/proto`) or streaming ones (`application/connect+proto`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RpcKind {
    Unary,
    Streaming,
}

impl Codec {
    pub fn name(self) -> &'static str {
        match self {
            Codec::Proto => "proto",
            Codec::Json => "json",
        }
    }

    /// The content type of a request or successful response.
    pub fn content_type(self, kind: RpcKind) -> HeaderValue {
        HeaderValue::from_static(match (kind, self) {
            (RpcKind::Unary, Codec::Proto) => "application/proto",
            (RpcKind::Unary, Codec::Json) => "application/json",
            (RpcKind::Streaming, Codec::Proto) => "application/connect+proto",
            (RpcKind::Streaming, Codec::Json) => "application/connect+json",
        })
    }

    /// Parses a content type (parameters such as `charset` are ignored).
    /// Returns the codec and whether it names a streaming RPC.
    pub fn from_content_type(content_type: &str) -> Option<(Codec, RpcKind)> {
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let (rest, kind) = match essence.strip_prefix("application/connect+") {
            Some(rest) => (rest, RpcKind::Streaming),
            None => (essence.strip_prefix("application/")?, RpcKind::Unary),
        };
        let codec = match rest {
            "proto" | "protobuf" => Codec::Proto,
            "json" => Codec::Json,
            _ => return None,
        };
        Some((codec, kind))
    }

    pub fn encode<M: Message>(self, msg: &M) -> Bytes {
        match self {
            Codec::Proto => Bytes::from(msg.encode_to_vec()),
            // pbjson's serialisers only fail on maps with non-string keys,
            // which proto3 JSON does not produce.
            Codec::Json => Bytes::from(serde_json::to_vec(msg).unwrap_or_default()),
        }
    }

    /// Decodes a message; malformed input is `invalid_argument`.
    pub fn decode<M: Message>(self, data: &[u8]) -> Result<M, ConnectError> {
        match self {
            Codec::Proto => M::decode(data).map_err(|e| {
                ConnectError::new(Code::InvalidArgument, format!("malformed protobuf: {e}"))
            }),
            Codec::Json if data.iter().all(u8::is_ascii_whitespace) => Ok(M::default()),
            Codec::Json => serde_json::from_slice(data).map_err(|e| {
                ConnectError::new(Code::InvalidArgument, format!("malformed JSON: {e}"))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::{ProcessConfig, StartRequest};

    #[test]
    fn content_types() {
        assert_eq!(
            Codec::from_content_type("application/json; charset=utf-8"),
            Some((Codec::Json, RpcKind::Unary))
        );
        assert_eq!(
            Codec::from_content_type("application/connect+proto"),
            Some((Codec::Proto, RpcKind::Streaming))
        );
        assert_eq!(Codec::from_content_type("text/plain"), None);
        assert_eq!(Codec::from_content_type("application/xml"), None);
    }

    #[test]
    fn json_uses_proto3_mapping() {
        let req = StartRequest {
            process: Some(ProcessConfig {
                cmd: "/bin/sh".into(),
                args: vec!["-c".into(), "echo hi".into()],
                cwd: Some("/tmp".into()),
                ..Default::default()
            }),
            stdin: Some(true),
            ..Default::default()
        };
        let json = Codec::Json.encode(&req);
        let text = std::str::from_utf8(&json).unwrap();
        assert!(text.contains(r#""cmd":"/bin/sh""#), "{text}");
        let back: StartRequest = Codec::Json.decode(&json).unwrap();
        assert_eq!(back, req);
        let proto = Codec::Proto.encode(&req);
        assert_eq!(Codec::Proto.decode::<StartRequest>(&proto).unwrap(), req);
    }

    #[test]
    fn malformed_input_is_invalid_argument() {
        let err = Codec::Json
            .decode::<StartRequest>(b"{not json")
            .unwrap_err();
        assert_eq!(err.code, Code::InvalidArgument);
        let err = Codec::Proto
            .decode::<StartRequest>(&[0x0a, 0xff, 0xff])
            .unwrap_err();
        assert_eq!(err.code, Code::InvalidArgument);
        let err = Codec::Json
            .decode::<StartRequest>(br#"{"process": 5}"#)
            .unwrap_err();
        assert_eq!(err.code, Code::InvalidArgument);
    }
}
