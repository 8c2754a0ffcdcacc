//! The limit for a cache hit: a bare hyper server (same runtime and connection settings as
//! the proxy) that answers every request with the same image bytes and the same kind of
//! headers a hit carries, without routing, credentials or a cache. Used by `bench/run`.
//! A gRPC call (content type `application/grpc`) gets the framed message of GRPC_FILE with
//! `grpc-status: 0` in trailers, as a gRPC hit does.
//!
//! Usage: bare_hyper ADDR BODY_FILE [GRPC_FILE]
// A load tool: it measures wall time (see .clippy.toml).
#![allow(clippy::disallowed_types)]

use std::convert::Infallible;
use std::process::ExitCode;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// The proxy binary's allocator, so that the limit is measured with it too.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(addr), Some(body_file)) = (args.next(), args.next()) else {
        eprintln!("usage: bare_hyper ADDR BODY_FILE");
        return ExitCode::FAILURE;
    };
    let body = match std::fs::read(&body_file) {
        Ok(b) => Bytes::from(b),
        Err(e) => {
            eprintln!("bare_hyper: {body_file}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let grpc = match args
        .next()
        .map(|file| std::fs::read(&file).map_err(|e| (file, e)))
    {
        None => Bytes::new(),
        Some(Ok(b)) => Bytes::from(b),
        Some(Err((file, e))) => {
            eprintln!("bare_hyper: {file}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match TcpListener::bind(&addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("bare_hyper: {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    // The proxy's HTTP/2 settings (src/server.rs), so gRPC hits are compared like for like.
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (body, grpc) = (body.clone(), grpc.clone());
        let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
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
            let headers = response.headers_mut();
            headers.insert("age", HeaderValue::from_static("3"));
            headers.insert("x-cache", HeaderValue::from_static("HIT"));
            headers.insert(
                "cache-status",
                HeaderValue::from_static("baremetal-image-cache; hit; ttl=57"),
            );
            async move { Ok::<_, Infallible>(response) }
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
}
