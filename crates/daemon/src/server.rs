//! HTTP/1.1 on a UNIX socket (socket permissions are the authentication; the tenant is
//! the `X-Skiff-Tenant` header) and optionally TCP (every request carries
//! `Authorization: Bearer <token>`, which names the tenant). Bodies are capped, every
//! failure is a JSON error, and a panic in a handler becomes a 500 instead of a dead
//! connection.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::api;
use crate::config::valid_tenant;
use crate::error::ApiError;
use crate::gate::{Pass, SHED_RESPONSE};
use crate::http::{error, Body};
use crate::state::Daemon;

/// The header that names the tenant on the UNIX socket.
pub const TENANT_HEADER: &str = "x-skiff-tenant";

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Unix,
    Tcp,
}

/// How long a shed connection may take to take its 503.
const SHED_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Serves one connection until the client closes it, if the gate gave it a `pass`;
/// otherwise answers 503 and closes it. A client must send each request's headers
/// within the configured timeout (also when a kept-alive connection sits idle), so
/// half-sent requests cannot hold slots; authentication follows as soon as the
/// headers are in, before any body is read.
pub fn serve_connection<S>(d: Arc<Daemon>, mut io: S, transport: Transport, pass: Option<Pass>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Some(pass) = pass else {
        d.metrics.shed_connections.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let _ = tokio::time::timeout(SHED_WRITE_TIMEOUT, async {
                let _ = io.write_all(SHED_RESPONSE).await;
                let _ = io.shutdown().await;
            })
            .await;
        });
        return;
    };
    let header_timeout = Duration::from_millis(d.config.connections.header_timeout_ms);
    tokio::spawn(async move {
        let _pass = pass;
        let service = hyper::service::service_fn(move |req| {
            let d = d.clone();
            async move { Ok::<_, Infallible>(handle(d, req, transport).await) }
        });
        if let Err(e) = hyper::server::conn::http1::Builder::new()
            .max_buf_size(64 * 1024)
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(TokioIo::new(io), service)
            .await
        {
            tracing::debug!("connection: {e}");
        }
    });
}

async fn handle(d: Arc<Daemon>, req: Request<Incoming>, transport: Transport) -> Response<Body> {
    d.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let d2 = d.clone();
    // A handler bug must not take the connection (or the daemon) down with it.
    let resp = match tokio::spawn(async move { route(d2, req, transport).await }).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("request handler failed: {e}");
            error(&ApiError::internal("the request handler failed"))
        }
    };
    if resp.status().is_client_error() {
        d.metrics.client_errors.fetch_add(1, Ordering::Relaxed);
    } else if resp.status().is_server_error() {
        d.metrics.server_errors.fetch_add(1, Ordering::Relaxed);
    }
    resp
}

async fn route(d: Arc<Daemon>, req: Request<Incoming>, transport: Transport) -> Response<Body> {
    let path = req.uri().path().to_owned();
    // Liveness needs no tenant.
    if path == "/healthz" {
        return api::healthz(&req);
    }
    let tenant = match tenant_of(&d, &req, transport) {
        Ok(t) => t,
        Err(e) => return error(&e),
    };
    if let Some(t) = &tenant {
        let quota = d.config.quota_of(t);
        if let Err(wait) = d.rate.take(t, &quota) {
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "the tenant's quota allows {} requests per second (burst {}); retry in {wait} s",
                    quota.requests_per_second, quota.burst
                ),
            );
            e.retry_after = Some(wait);
            return error(&e);
        }
    }
    match api::dispatch(d, req, tenant).await {
        Ok(r) => r,
        Err(e) => error(&e),
    }
}

/// The token of `Authorization: Bearer <token>`: the scheme is case-insensitive (RFC
/// 7235), one or more spaces follow it, and the token is taken exactly as sent (a
/// token with stray spaces is a different token, not the same one trimmed).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim_start_matches(' ');
    (!token.is_empty()).then_some(token)
}

/// The tenant of a request: from the bearer token on TCP, from the header on the UNIX
/// socket. `None` only for `/metrics` on the UNIX socket without a header.
fn tenant_of(
    d: &Daemon,
    req: &Request<Incoming>,
    transport: Transport,
) -> Result<Option<String>, ApiError> {
    let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
    match transport {
        Transport::Tcp => {
            let Some(h) = req.headers().get(hyper::header::AUTHORIZATION) else {
                return Err(unauthorized("missing Authorization: Bearer <token>"));
            };
            let token =
                h.to_str().ok().and_then(bearer_token).ok_or_else(|| {
                    unauthorized("the Authorization header must be Bearer <token>")
                })?;
            d.config
                .tenant_for_token(token)
                .map(Some)
                .ok_or_else(|| unauthorized("invalid token"))
        }
        Transport::Unix => match req.headers().get(TENANT_HEADER) {
            None if req.uri().path() == "/metrics" => Ok(None),
            None => Err(ApiError::bad_request(
                "tenant_required",
                "requests on the UNIX socket name their tenant in the X-Skiff-Tenant header",
            )),
            Some(v) => match v.to_str() {
                Ok(t) if valid_tenant(t) => Ok(Some(t.to_owned())),
                _ => Err(ApiError::bad_request(
                    "invalid_tenant",
                    "X-Skiff-Tenant: 1-32 of [a-z0-9-], starting with a letter or digit",
                )),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_read_as_rfc_7235_says() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer abc"), Some("abc"));
        assert_eq!(bearer_token("BEARER  abc"), Some("abc"));
        assert_eq!(
            bearer_token("Bearer abc "),
            Some("abc "),
            "not trimmed into a match"
        );
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearerabc"), None);
    }
}
