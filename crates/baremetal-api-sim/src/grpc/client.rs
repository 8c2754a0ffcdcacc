//! A typed `ImageService` client for tests, over h2c (HTTP/2 with prior knowledge), that also
//! hands out the raw message bytes of an answer.

use bytes::{Buf, BufMut, Bytes};
use http::uri::{InvalidUri, PathAndQuery};
use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::{AsciiMetadataValue, MetadataKey};
use tonic::{Response, Status};

use super::messages::{
    CreateImageRequest, DeleteImageRequest, GetImageRequest, Image, ListImageOperationsRequest,
    ListImageOperationsResponse, ListImagesRequest, ListImagesResponse, Operation,
    UpdateImageRequest,
};
use super::service::Method;

type Transport = hyper_util::client::legacy::Client<HttpConnector, tonic::body::Body>;

/// A client of `yandex.cloud.baremetal.v1alpha.ImageService` at one origin, over plaintext
/// HTTP/2 with prior knowledge, as the official SDKs talk to a local sidecar. Cheap to clone
/// (clones share the connection).
///
/// Every method takes the caller's token (sent as `authorization: Bearer <token>`; `None`
/// sends none) and extra metadata (`x-request-id`, `cache-control` ...). An answer's
/// [`Response::metadata`] holds the response headers and the trailers; a failed call's
/// [`Status`] holds the status, its details ([`super::status_details`]) and the headers.
/// The `*_raw` methods answer the message's bytes as received, unknown fields included.
/// Answers of any size are accepted; there is no deadline (wrap a call in a timeout).
#[derive(Clone, Debug)]
pub struct ImageClient {
    grpc: tonic::client::Grpc<Transport>,
}

impl ImageClient {
    /// A client of the server at `origin` (`http://127.0.0.1:PORT`); it connects on the
    /// first call.
    pub async fn connect(origin: &str) -> Result<ImageClient, InvalidUri> {
        let origin: Uri = origin.parse()?;
        let transport = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build(HttpConnector::new());
        let grpc = tonic::client::Grpc::with_origin(transport, origin)
            .max_decoding_message_size(usize::MAX);
        Ok(ImageClient { grpc })
    }

    pub async fn get(
        &mut self,
        image_id: &str,
        token: Option<&str>,
        metadata: &[(&str, &str)],
    ) -> Result<Response<Image>, Status> {
        let request = GetImageRequest {
            image_id: image_id.to_owned(),
        };
        self.call(Method::Get, &request, token, metadata).await
    }

    /// Get, answering the `Image` message's bytes as received.
    pub async fn get_raw(
        &mut self,
        image_id: &str,
        token: Option<&str>,
        metadata: &[(&str, &str)],
    ) -> Result<Response<Bytes>, Status> {
        let request = GetImageRequest {
            image_id: image_id.to_owned(),
        };
        let path = Method::Get.path();
        self.call_raw(path, request.encode_to_vec().into(), token, metadata)
            .await
    }

    pub async fn list(
        &mut self,
        request: ListImagesRequest,
        token: Option<&str>,
        metadata: &[(&str, &str)],
    ) -> Result<Response<ListImagesResponse>, Status> {
        self.call(Method::List, &request, token, metadata).await
    }

    pub async fn create(
        &mut self,
        request: CreateImageRequest,
        token: Option<&str>,
        metadata: &[(&str, &str)],
    ) -> Result<Response<Operation>, Status> {
        self.call(Method::Create, &request, token, metadata).await
    }

    pub async fn update(
        &mut self,
        request: UpdateImageRequest,
        token: Option<&str>,
        metadata: &[(&str, &str)],
    ) -> Result<Response<Operation>, Status> {
        self.call(Method::Update, &request, token, metadata).await
    }

    pub async fn delete(
        &mut self,
        image_id: &str,
        token: Option<&str>,
        metadata: &[(&str, &str)],
    ) -> Result<Response<Operation>, Status> {
        let request = DeleteImageRequest {
            image_id: image_id.to_owned(),
        };
        self.call(Method::Delete, &request, token, metadata).await
    }

    pub async fn list_operations(
        &mut self,
        image_id: &str,
        token: Option<&str>,
        metadata: &[(&str, &str)],
    ) -> Result<Response<ListImageOperationsResponse>, Status> {
        let request = ListImageOperationsRequest {
            image_id: image_id.to_owned(),
            ..ListImageOperationsRequest::default()
        };
        self.call(Method::ListOperations, &request, token, metadata)
            .await
    }

    /// Any unary call: `message` (bytes, so a test can send what no typed request can) to
    /// `path` (`/package.Service/Method`); the answer's message bytes as received.
    pub async fn call_raw(
        &mut self,
        path: &str,
        message: Bytes,
        token: Option<&str>,
        metadata: &[(&str, &str)],
    ) -> Result<Response<Bytes>, Status> {
        let path = PathAndQuery::try_from(path)
            .map_err(|e| Status::invalid_argument(format!("bad path {path:?}: {e}")))?;
        let mut request = tonic::Request::new(message);
        let bearer = token.map(|token| format!("Bearer {token}"));
        let pairs = bearer.iter().map(|value| ("authorization", value.as_str()));
        for (name, value) in pairs.chain(metadata.iter().copied()) {
            let key = MetadataKey::from_bytes(name.as_bytes())
                .map_err(|e| Status::invalid_argument(format!("bad metadata key {name:?}: {e}")))?;
            let value = AsciiMetadataValue::try_from(value)
                .map_err(|e| Status::invalid_argument(format!("bad metadata value: {e}")))?;
            request.metadata_mut().append(key, value);
        }
        self.grpc
            .ready()
            .await
            .map_err(|e| Status::unavailable(format!("client not ready: {e}")))?;
        self.grpc.unary(request, path, RawCodec).await
    }

    async fn call<Req: Message, Resp: Message + Default>(
        &mut self,
        method: Method,
        request: &Req,
        token: Option<&str>,
        metadata: &[(&str, &str)],
    ) -> Result<Response<Resp>, Status> {
        let message = Bytes::from(request.encode_to_vec());
        let answer = self
            .call_raw(method.path(), message, token, metadata)
            .await?;
        let (metadata, bytes, extensions) = answer.into_parts();
        let message = Resp::decode(bytes)
            .map_err(|e| Status::internal(format!("the answer is no valid message: {e}")))?;
        Ok(Response::from_parts(metadata, message, extensions))
    }
}

/// Messages as bytes both ways: the client encodes the typed requests itself and keeps the
/// answers' bytes as they came.
#[derive(Clone, Copy, Debug, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}
