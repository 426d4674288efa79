//! The routes of the API (described in ../openapi.yaml) and their handlers: parse and
//! check the request, run the blocking work on tokio's blocking pool, answer JSON.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::{broadcast, mpsc};

use crate::error::{printable, ApiError};
use crate::http::{self, Body};
use crate::images::{self, PullRequest};
use crate::invocations::{self, InvokeRequest};
use crate::sandbox_exec::{self, ExecRequest};
use crate::sandboxes::{self, CreateSandbox, StopSandbox};
use crate::state::Daemon;

pub fn healthz(_req: &Request<Incoming>) -> Response<Body> {
    http::json(StatusCode::OK, &json!({"status": "ok"}))
}

/// Runs blocking work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("worker: {e}")))?
}

pub async fn dispatch(
    d: Arc<Daemon>,
    req: Request<Incoming>,
    tenant: Option<String>,
) -> Result<Response<Body>, ApiError> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if segs.as_slice() == ["metrics"] {
        allow(&method, &[Method::GET])?;
        return metrics(d).await;
    }
    // Every other route belongs to a tenant.
    let tenant = tenant
        .ok_or_else(|| ApiError::bad_request("tenant_required", "this request needs a tenant"))?;
    let t = tenant.clone();
    match segs.as_slice() {
        ["v1", "images"] => {
            allow(&method, &[Method::GET])?;
            let list = blocking(move || images::list(&d)).await?;
            Ok(http::json(StatusCode::OK, &json!({"images": list})))
        }
        ["v1", "images", "pull"] if method == Method::POST => {
            let r: PullRequest = body_json(&d, req).await?;
            let v = blocking(move || images::pull(&d, &r.reference)).await?;
            Ok(http::json(StatusCode::OK, &v))
        }
        ["v1", "images", reference] => {
            allow(&method, &[Method::GET])?;
            let reference = percent_decode(reference)?;
            let v = blocking(move || images::inspect(&d, &reference)).await?;
            Ok(http::json(StatusCode::OK, &v))
        }
        ["v1", "sandboxes"] => {
            allow(&method, &[Method::GET, Method::POST])?;
            if method == Method::GET {
                let list = blocking(move || sandboxes::list(&d, &t)).await?;
                return Ok(http::json(StatusCode::OK, &json!({"sandboxes": list})));
            }
            let r: CreateSandbox = body_json(&d, req).await?;
            let v = blocking(move || sandboxes::create(&d, &t, r)).await?;
            Ok(http::json(StatusCode::CREATED, &v))
        }
        ["v1", "sandboxes", id] => {
            allow(&method, &[Method::GET, Method::DELETE])?;
            let id = (*id).to_owned();
            if method == Method::GET {
                let v = blocking(move || sandboxes::get(&d, &t, &id)).await?;
                return Ok(http::json(StatusCode::OK, &v));
            }
            blocking(move || sandboxes::delete(&d, &t, &id)).await?;
            Ok(http::json(StatusCode::OK, &json!({"deleted": true})))
        }
        ["v1", "sandboxes", id, action] => {
            let id = (*id).to_owned();
            sandbox_action(d, req, tenant, id, action, &method, &query).await
        }
        ["v1", "invoke"] => {
            allow(&method, &[Method::POST])?;
            let r: InvokeRequest = body_json(&d, req).await?;
            let v = invocations::invoke(d, tenant, r).await?;
            Ok(http::json(StatusCode::OK, &v))
        }
        ["v1", "events"] => {
            allow(&method, &[Method::GET])?;
            Ok(events(&d, tenant))
        }
        _ => Err(ApiError::not_found(format!(
            "no route {}",
            printable(&path)
        ))),
    }
}

async fn sandbox_action(
    d: Arc<Daemon>,
    req: Request<Incoming>,
    tenant: String,
    id: String,
    action: &str,
    method: &Method,
    query: &str,
) -> Result<Response<Body>, ApiError> {
    match action {
        "start" => {
            allow(method, &[Method::POST])?;
            let v = blocking(move || sandboxes::start(&d, &tenant, &id)).await?;
            Ok(http::json(StatusCode::OK, &v))
        }
        "stop" => {
            allow(method, &[Method::POST])?;
            let r: StopSandbox = body_json_or_default(&d, req).await?;
            let v = blocking(move || sandboxes::stop(&d, &tenant, &id, &r)).await?;
            Ok(http::json(StatusCode::OK, &v))
        }
        "exec" => {
            allow(method, &[Method::POST])?;
            let r: ExecRequest = body_json(&d, req).await?;
            exec(d, tenant, id, r).await
        }
        "logs" => {
            allow(method, &[Method::GET])?;
            let tail = match query_param(query, "tail") {
                None => None,
                Some(v) => Some(
                    v.parse::<usize>()
                        .map_err(|_| ApiError::invalid("tail must be a non-negative integer"))?,
                ),
            };
            let v = blocking(move || sandboxes::logs(&d, &tenant, &id, tail)).await?;
            Ok(http::json(StatusCode::OK, &json!({"entries": v})))
        }
        "stats" => {
            allow(method, &[Method::GET])?;
            let v = blocking(move || sandboxes::stats(&d, &tenant, &id)).await?;
            Ok(http::json(StatusCode::OK, &v))
        }
        _ => Err(ApiError::not_found("no such sandbox action")),
    }
}

/// Streams the process's output as NDJSON: `{"stream":"stdout","data":"..."}` lines,
/// then `{"exit_code":N}` (or `{"error":{...}}` if the sandbox died first). A client
/// that disconnects mid-stream gets its process killed; the sandbox carries on.
async fn exec(
    d: Arc<Daemon>,
    tenant: String,
    id: String,
    r: ExecRequest,
) -> Result<Response<Body>, ApiError> {
    if r.timeout_s.is_some_and(|t| !(1..=86_400).contains(&t)) {
        return Err(ApiError::invalid("timeout_s must be between 1 and 86400"));
    }
    let timeout = r.timeout_s.map(Duration::from_secs);
    let d2 = d.clone();
    let t2 = tenant.clone();
    let (id, agent, failed) = blocking(move || sandbox_exec::start(&d2, &t2, &id, &r)).await?;
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let gone = tx.clone();
    tokio::task::spawn_blocking(move || {
        let code = sandbox_exec::pump(
            agent,
            failed,
            timeout,
            |chunk| tx.blocking_send(line(&chunk)).is_ok(),
            move || gone.is_closed(),
        );
        d.events.publish(&tenant, "exec.exited", Some(&id), code);
    });
    Ok(http::stream(rx))
}

fn events(d: &Daemon, tenant: String) -> Response<Body> {
    let mut sub = d.events.subscribe();
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                ev = sub.recv() => match ev {
                    Ok(ev) if ev.tenant == tenant => {
                        if tx.send(line(&ev)).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                () = tx.closed() => return,
            }
        }
    });
    http::stream(rx)
}

async fn metrics(d: Arc<Daemon>) -> Result<Response<Body>, ApiError> {
    let text = blocking(move || {
        let mut counts = [
            ("created", 0u64),
            ("running", 0),
            ("exited", 0),
            ("lost", 0),
        ];
        for (_, st) in sandboxes::all(&d)? {
            let s = sandboxes::state_name(&st);
            if let Some(c) = counts.iter_mut().find(|(n, _)| *n == s) {
                c.1 += 1;
            }
        }
        Ok(d.metrics.render(&counts, d.pools.ready()))
    })
    .await?;
    Ok(http::text(
        StatusCode::OK,
        "text/plain; version=0.0.4",
        text,
    ))
}

fn line(v: &impl serde::Serialize) -> Bytes {
    let mut b = serde_json::to_vec(v).unwrap_or_default();
    b.push(b'\n');
    Bytes::from(b)
}

fn allow(method: &Method, allowed: &[Method]) -> Result<(), ApiError> {
    if allowed.contains(method) {
        return Ok(());
    }
    let names: Vec<&str> = allowed.iter().map(Method::as_str).collect();
    Err(ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("use {}", names.join(" or ")),
    ))
}

async fn body_bytes(d: &Daemon, req: Request<Incoming>) -> Result<Bytes, ApiError> {
    let cap = d.config.max_body_bytes;
    let too_big = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request bodies are limited to {cap} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > cap as u64) {
        return Err(too_big());
    }
    match Limited::new(req.into_body(), cap).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(too_big())
        }
        Err(e) => Err(ApiError::bad_request(
            "bad_body",
            format!("reading the request body: {e}"),
        )),
    }
}

/// Malformed JSON, wrong types and unknown fields are all 400 `invalid_json` with
/// serde's description (which names the field and position).
fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("request body: {e}")))
}

async fn body_json<T: DeserializeOwned>(d: &Daemon, req: Request<Incoming>) -> Result<T, ApiError> {
    parse(&body_bytes(d, req).await?)
}

/// For actions whose body is optional (an empty body means the defaults).
async fn body_json_or_default<T: DeserializeOwned + Default>(
    d: &Daemon,
    req: Request<Incoming>,
) -> Result<T, ApiError> {
    let bytes = body_bytes(d, req).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    parse(&bytes)
}

fn query_param<'q>(query: &'q str, key: &str) -> Option<&'q str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// `%XX` escapes of a path segment (image references carry `/` and `:`).
fn percent_decode(s: &str) -> Result<String, ApiError> {
    let bad = || ApiError::invalid("malformed percent-encoding in the path");
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or_else(bad)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_and_queries() {
        assert_eq!(
            percent_decode("busybox%3Alatest").unwrap(),
            "busybox:latest"
        );
        assert_eq!(percent_decode("a%2Fb").unwrap(), "a/b");
        assert!(percent_decode("%zz").is_err());
        assert!(percent_decode("%4").is_err());
        assert!(percent_decode("%ff").is_err());
        assert_eq!(query_param("tail=5&x", "tail"), Some("5"));
        assert_eq!(query_param("x", "x"), Some(""));
        assert_eq!(query_param("", "tail"), None);
    }

    #[test]
    fn bodies_with_unknown_fields_or_wrong_types_are_invalid_json() {
        let e = parse::<StopSandbox>(br#"{"timeout_s": 1, "bogus": 2}"#).unwrap_err();
        assert_eq!(
            (e.status, e.code),
            (StatusCode::BAD_REQUEST, "invalid_json")
        );
        assert!(e.message.contains("bogus"), "{}", e.message);
        assert!(parse::<StopSandbox>(br#"{"timeout_s": "x"}"#).is_err());
        assert!(parse::<StopSandbox>(b"{").is_err());
        assert!(parse::<StopSandbox>(br#"{"timeout_s": 3}"#).is_ok());
    }
}
