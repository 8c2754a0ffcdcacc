//! gRPC against the proxy: the simulator's `ImageClient` (tonic, h2c) for typed calls, and
//! a raw h2c exchange for what no tonic call sends (a compressed message) or for the head of
//! an answer as it came (tonic keeps only the trailers of a failed call that had a body).

use std::io::Write;
use std::time::Duration;

use baremetal_api_sim::grpc::{GetImageRequest, Image, ImageClient};
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use prost::Message;
use tonic::metadata::MetadataMap;

use super::Harness;

/// A tonic call's answer or status, as far as the tests look at it.
pub type Call<T> = Result<tonic::Response<T>, tonic::Status>;

impl Harness {
    /// A gRPC client of the proxy's listener (h2c, prior knowledge).
    pub async fn grpc(&self) -> ImageClient {
        ImageClient::connect(&format!("http://{}", self.addr))
            .await
            .expect("client of the proxy")
    }

    /// A gRPC client of the simulator itself, to compare what the proxy relays with what
    /// the upstream answers.
    pub async fn grpc_upstream(&self) -> ImageClient {
        ImageClient::connect(&format!("http://{}", self.upstream))
            .await
            .expect("client of the simulator")
    }

    /// A raw gRPC exchange with the proxy: `body` sent as it is (already framed).
    pub async fn grpc_raw(&self, path: &str, headers: &[(&str, &str)], body: Bytes) -> RawAnswer {
        raw_exchange(&format!("http://{}{path}", self.addr), headers, body).await
    }
}

/// A Get of `id` through `client`, bounded in time: the client has no deadline of its own.
pub async fn get_raw(
    client: &mut ImageClient,
    id: &str,
    token: Option<&str>,
    metadata: &[(&str, &str)],
) -> Call<Bytes> {
    tokio::time::timeout(Duration::from_secs(30), client.get_raw(id, token, metadata))
        .await
        .expect("a gRPC answer within 30 s")
}

/// A Get of `id` with `token` (and no other metadata) that must succeed, or a panic naming
/// `what` and the status.
pub async fn get_ok(
    client: &mut ImageClient,
    id: &str,
    token: Option<&str>,
    what: &str,
) -> tonic::Response<Bytes> {
    ok(get_raw(client, id, token, &[]).await, what)
}

/// A Get of `id` with `token` (and no other metadata) that must fail with `code`: its
/// status.
pub async fn get_failed(
    client: &mut ImageClient,
    id: &str,
    token: Option<&str>,
    code: tonic::Code,
    what: &str,
) -> tonic::Status {
    failed(get_raw(client, id, token, &[]).await, code, what)
}

/// One metadata value of an answer (headers and trailers), or `None`.
pub fn meta<'a>(metadata: &'a MetadataMap, name: &str) -> Option<&'a str> {
    metadata.get(name).and_then(|v| v.to_str().ok())
}

/// The `x-cache` of a successful call ("" without one).
pub fn x_cache<T>(answer: &tonic::Response<T>) -> &str {
    meta(answer.metadata(), "x-cache").unwrap_or("")
}

/// The `cache-status` of a successful call ("" without one).
pub fn cache_status<T>(answer: &tonic::Response<T>) -> &str {
    meta(answer.metadata(), "cache-status").unwrap_or("")
}

/// The successful answer of `call`, or a panic naming `what` and the status.
pub fn ok<T>(call: Call<T>, what: &str) -> tonic::Response<T> {
    call.unwrap_or_else(|status| panic!("{what}: {status:?}"))
}

/// The status of a call that must have failed with `code`.
pub fn failed<T: std::fmt::Debug>(call: Call<T>, code: tonic::Code, what: &str) -> tonic::Status {
    let status = call.expect_err(what);
    assert_eq!(status.code(), code, "{what}: {status:?}");
    status
}

/// The `Image` an answer's bytes encode.
pub fn image(bytes: &[u8]) -> Image {
    Image::decode(bytes).expect("an Image")
}

/// A message as it travels: flag 0 (not compressed), its length, its bytes.
pub fn framed(message: &[u8]) -> Bytes {
    framed_with(0, message)
}

/// A message with compression flag `flag` (the bytes as given).
pub fn framed_with(flag: u8, message: &[u8]) -> Bytes {
    let mut body = vec![flag];
    body.extend_from_slice(&(message.len() as u32).to_be_bytes());
    body.extend_from_slice(message);
    Bytes::from(body)
}

/// `GetImageRequest { image_id }`, encoded.
pub fn get_request(id: &str) -> Vec<u8> {
    GetImageRequest {
        image_id: id.to_string(),
    }
    .encode_to_vec()
}

/// `message` gzipped.
pub fn gzip(message: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(message).unwrap();
    encoder.finish().unwrap()
}

/// A gRPC answer as it came over the wire.
pub struct RawAnswer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The framed messages.
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

impl RawAnswer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `grpc-status`: from the trailers, or from the head of a trailers-only answer.
    pub fn grpc_status(&self) -> Option<u32> {
        self.trailers
            .as_ref()
            .and_then(|t| t.get("grpc-status"))
            .or_else(|| self.headers.get("grpc-status"))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
    }

    /// The one message of the body, which must not be compressed.
    pub fn message(&self) -> Bytes {
        assert!(self.body.len() >= 5, "no message: {:?}", self.body);
        assert_eq!(self.body[0], 0, "the answer's message is not compressed");
        let length = u32::from_be_bytes(self.body[1..5].try_into().unwrap()) as usize;
        assert_eq!(length, self.body.len() - 5, "one whole message");
        self.body.slice(5..)
    }
}

/// A POST of `body` to `url` over h2c, with `application/grpc`, `te: trailers` and
/// `headers`.
pub async fn raw_exchange(url: &str, headers: &[(&str, &str)], body: Bytes) -> RawAnswer {
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let mut request = http::Request::post(url)
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(body)).unwrap();
    let exchange = async {
        let response = client.request(request).await.expect("an h2c answer");
        let (parts, body) = response.into_parts();
        let collected = body.collect().await.expect("the whole answer");
        let trailers = collected.trailers().cloned();
        RawAnswer {
            status: parts.status,
            headers: parts.headers,
            body: collected.to_bytes(),
            trailers,
        }
    };
    tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .expect("a raw gRPC answer within 30 s")
}
