//! The limit for a cache hit: a bare hyper server (same runtime and connection settings as
//! the proxy) that answers every request with the same image bytes, without routing,
//! credentials or a cache. Used by `bench/run` (throughput) and `bench/callgrind`
//! (instructions per hit). A gRPC call (content type `application/grpc`) gets the framed
//! message of GRPC_FILE with `grpc-status: 0` in trailers, as a gRPC hit does.
//!
//! Usage: bare_hyper [--only http1|http2] [--plain] ADDR BODY_FILE [GRPC_FILE]
//!
//! `--only` serves one protocol with hyper's own builder for it (`http1::Builder` or
//! `http2::Builder`) instead of detecting it; `--plain` sends only `content-type` with the
//! body, not the `age`, `x-cache` and `cache-status` headers a hit carries.
// A load tool: it measures wall time (see .clippy.toml).
#![allow(clippy::disallowed_types)]

use std::convert::Infallible;
use std::process::ExitCode;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// The proxy binary's allocator, so that the limit is measured with it too.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage: bare_hyper [--only http1|http2] [--plain] ADDR BODY_FILE [GRPC_FILE]";

/// Which connections the server takes.
#[derive(Clone, Copy)]
enum Only {
    Detect,
    Http1,
    Http2,
}

fn read(file: &str) -> Result<Bytes, String> {
    std::fs::read(file)
        .map(Bytes::from)
        .map_err(|e| format!("bare_hyper: {file}: {e}"))
}

/// The answer to one request.
fn answer(
    request: &http::Request<Incoming>,
    body: &Bytes,
    grpc: &Bytes,
    plain: bool,
) -> Response<BoxBody<Bytes, Infallible>> {
    let is_grpc = request
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let mut response = if is_grpc {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let body = Full::new(grpc.clone())
            .with_trailers(std::future::ready(Some(Ok(trailers))))
            .boxed();
        let mut response = Response::new(body);
        response
            .headers_mut()
            .insert("content-type", HeaderValue::from_static("application/grpc"));
        response
    } else {
        let mut response = Response::new(Full::new(body.clone()).boxed());
        response
            .headers_mut()
            .insert("content-type", HeaderValue::from_static("application/json"));
        response
    };
    if !plain {
        let headers = response.headers_mut();
        headers.insert("age", HeaderValue::from_static("3"));
        headers.insert("x-cache", HeaderValue::from_static("HIT"));
        headers.insert(
            "cache-status",
            HeaderValue::from_static("baremetal-image-cache; hit; ttl=57"),
        );
    }
    response
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut only = Only::Detect;
    let mut plain = false;
    let mut positional = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--only" => match args.next().as_deref() {
                Some("http1") => only = Only::Http1,
                Some("http2") => only = Only::Http2,
                _ => {
                    eprintln!("{USAGE}");
                    return ExitCode::FAILURE;
                }
            },
            "--plain" => plain = true,
            _ => positional.push(arg),
        }
    }
    let (addr, body, grpc) = match positional.as_slice() {
        [addr, body] => (addr, read(body), Ok(Bytes::new())),
        [addr, body, grpc] => (addr, read(body), read(grpc)),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::FAILURE;
        }
    };
    let (body, grpc) = match (body, grpc) {
        (Ok(body), Ok(grpc)) => (body, grpc),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("bare_hyper: {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut detect = auto::Builder::new(TokioExecutor::new());
    detect.http1().timer(TokioTimer::new());
    // The proxy's HTTP/2 settings (src/server.rs), so gRPC hits are compared like for like.
    detect
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256);
    // hyper's builders as they come (no timer: the limit of what serving a request costs).
    let h1 = http1::Builder::new();
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.max_concurrent_streams(256);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (body, grpc) = (body.clone(), grpc.clone());
        let service = service_fn(move |request: http::Request<Incoming>| {
            let response = answer(&request, &body, &grpc, plain);
            async move { Ok::<_, Infallible>(response) }
        });
        let io = TokioIo::new(stream);
        match only {
            Only::Detect => {
                let connection = detect.serve_connection(io, service).into_owned();
                tokio::spawn(async move {
                    let _ = connection.await;
                });
            }
            Only::Http1 => {
                let connection = h1.serve_connection(io, service);
                tokio::spawn(async move {
                    let _ = connection.await;
                });
            }
            Only::Http2 => {
                let connection = h2.serve_connection(io, service);
                tokio::spawn(async move {
                    let _ = connection.await;
                });
            }
        }
    }
}
