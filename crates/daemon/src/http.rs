//! HTTP responses as the API writes them: JSON bodies, JSON errors, NDJSON streams fed
//! by a channel, and plain text. Shared by the server (errors it answers itself) and
//! the API's handlers.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Frame;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use tokio::sync::mpsc;

use crate::error::ApiError;

pub type Body = BoxBody<Bytes, Infallible>;

/// A response body fed by a channel (exec output, events): NDJSON lines as they come.
/// When the client goes away hyper drops the body, the receiver closes, and the
/// producer sees its sends fail.
pub struct ChannelBody(pub mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

pub fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    let mut bytes = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    bytes.push(b'\n');
    let mut r = Response::new(Full::new(Bytes::from(bytes)).boxed());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

pub fn error(e: &ApiError) -> Response<Body> {
    let mut r = json(e.status, &e.body());
    if let Some(s) = e.retry_after {
        if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
            r.headers_mut().insert("retry-after", v);
        }
    }
    r
}

pub fn stream(rx: mpsc::Receiver<Bytes>) -> Response<Body> {
    let mut r = Response::new(BodyExt::boxed(ChannelBody(rx)));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    r
}

pub fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)).boxed());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}
