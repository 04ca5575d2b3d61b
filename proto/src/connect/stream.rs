//! Streams of framed messages: reading envelopes out of an HTTP body, and the
//! end-of-stream message that closes every streaming response.

use std::{collections::HashMap, pin::Pin};

use bytes::Bytes;
use futures_util::{Stream, StreamExt, stream};
use http_body::Body;
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};

use super::{
    BoxError, Code, Codec, Compression, ConnectError, Message,
    envelope::{self, Decoder, Envelope},
    error::WireError,
};

/// A stream of messages, or the error that ended it: what a server-streaming
/// handler returns, what a client-streaming handler reads, and what a client
/// gets back from a server-streaming call.
pub type MessageStream<T> = Pin<Box<dyn Stream<Item = Result<T, ConnectError>> + Send>>;

/// The JSON body of the end-of-stream envelope.
#[derive(Default, Serialize, Deserialize)]
pub(crate) struct EndStream {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<WireError>,
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub metadata: HashMap<String, Vec<String>>,
}

/// The end-of-stream envelope for a stream that ended with `result`.
pub(crate) fn end_stream(result: Result<(), &ConnectError>) -> Bytes {
    let end = EndStream {
        error: result.err().map(ConnectError::to_wire),
        metadata: HashMap::new(),
    };
    // Serialising strings cannot fail.
    let json = serde_json::to_vec(&end).unwrap_or_default();
    envelope::encode(envelope::FLAG_END_STREAM, &json)
}

/// Splits an HTTP body into envelopes. Transport failures are `unavailable`,
/// framing errors `invalid_argument` (or `resource_exhausted` when a message
/// exceeds `limit`).
pub(crate) fn envelopes<B>(
    body: B,
    limit: usize,
) -> impl Stream<Item = Result<Envelope, ConnectError>>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    struct State<B> {
        body: B,
        decoder: Decoder,
        done: bool,
    }
    let state = State {
        body,
        decoder: Decoder::new(limit),
        done: false,
    };
    stream::unfold(state, |mut st| async move {
        loop {
            if st.done {
                return None;
            }
            match st.decoder.next() {
                Ok(Some(env)) => return Some((Ok(env), st)),
                Ok(None) => {}
                Err(e) => {
                    st.done = true;
                    return Some((Err(framing_error(e)), st));
                }
            }
            match st.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        st.decoder.push(&data);
                    }
                }
                Some(Err(e)) => {
                    st.done = true;
                    let e: BoxError = e.into();
                    return Some((
                        Err(ConnectError::unavailable(format!("reading stream: {e}"))),
                        st,
                    ));
                }
                None => {
                    st.done = true;
                    return match st.decoder.finish() {
                        Ok(()) => None,
                        Err(e) => Some((Err(framing_error(e)), st)),
                    };
                }
            }
        }
    })
}

fn framing_error(e: envelope::EnvelopeError) -> ConnectError {
    let code = match e {
        envelope::EnvelopeError::TooLarge { .. } => Code::ResourceExhausted,
        _ => Code::InvalidArgument,
    };
    ConnectError::new(code, format!("malformed stream: {e}"))
}

/// Decodes one (possibly compressed) message envelope.
pub(crate) fn decode_envelope<T: Message>(
    env: Envelope,
    codec: Codec,
    compression: Compression,
    limit: usize,
) -> Result<T, ConnectError> {
    let data = if env.is_compressed() {
        if compression == Compression::Identity {
            return Err(ConnectError::invalid_argument(
                "compressed message in a stream without Connect-Content-Encoding",
            ));
        }
        compression.decompress(env.data, limit)?
    } else {
        env.data
    };
    codec.decode(&data)
}

/// Messages of a request stream (client streaming: no end-of-stream envelope
/// from the client; the body simply ends).
pub(crate) fn request_messages<B, T>(
    body: B,
    codec: Codec,
    compression: Compression,
    limit: usize,
) -> MessageStream<T>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
    T: Message,
{
    Box::pin(envelopes(body, limit).map(move |env| {
        let env = env?;
        if env.is_end_stream() {
            return Err(ConnectError::invalid_argument(
                "end-of-stream envelope in a request stream",
            ));
        }
        decode_envelope(env, codec, compression, limit)
    }))
}

/// Messages of a response stream, ending at the end-of-stream envelope (an
/// error there becomes the stream's last item). A body that ends without one
/// was cut off: `unavailable`.
pub(crate) fn response_messages<B, T>(
    body: B,
    codec: Codec,
    compression: Compression,
    limit: usize,
) -> MessageStream<T>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
    T: Message,
{
    let envs = Box::pin(envelopes(body, limit));
    Box::pin(stream::unfold(
        (envs, false),
        move |(mut envs, ended)| async move {
            if ended {
                return None;
            }
            match envs.next().await {
                None => Some((
                    Err(ConnectError::unavailable(
                        "stream closed before its end-of-stream message",
                    )),
                    (envs, true),
                )),
                Some(Err(e)) => Some((Err(e), (envs, true))),
                Some(Ok(env)) if env.is_end_stream() => {
                    let end: EndStream = match serde_json::from_slice(&env.data) {
                        Ok(end) => end,
                        Err(e) => {
                            let err = ConnectError::internal(format!(
                                "malformed end-of-stream message: {e}"
                            ));
                            return Some((Err(err), (envs, true)));
                        }
                    };
                    end.error.map(|wire| {
                        (
                            Err(ConnectError::from_wire(wire, Code::Unknown)),
                            (envs, true),
                        )
                    })
                }
                Some(Ok(env)) => {
                    let item = decode_envelope(env, codec, compression, limit);
                    let failed = item.is_err();
                    Some((item, (envs, failed)))
                }
            }
        },
    ))
}
