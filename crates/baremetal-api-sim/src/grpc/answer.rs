//! A gRPC call's answer on the wire: `200`, `application/grpc`, the framed message and a
//! `grpc-status: 0` trailer, or a trailers-only error; and what each fault makes of it.

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, Response};
use prost::encoding::encoded_len_varint;
use prost::Message;
use tonic::Code;

use super::convert::{self, SimImage};
use super::messages::{protobuf, rpc};
use super::service::{self, Call};
use crate::body::SimBody;
use crate::error::{ApiError, REQUEST_INFO_TYPE};
use crate::model::{other_image_id, request_id, trace_id};
use crate::server::{fault_image, Dropped};
use crate::{Fault, Simulator};

/// The `Garbage` fault's message: field 7 = READY, then a field 1 whose announced length runs
/// past the end (a proxy's gateway error page after it), so no decoder accepts it.
const GARBAGE: &[u8] = b"\x38\x02\x0a\x7f<html><body>502 Bad Gateway</body></html>";
/// Field 5 (`description`), length-delimited.
const DESCRIPTION_KEY: u8 = (5 << 3) | 2;

/// What the call gets: the service's answer, or what the armed fault makes of it.
pub(crate) async fn answer(
    sim: &Simulator,
    call: &Call,
    token: Option<&str>,
    fault: Option<Fault>,
) -> Result<Response<SimBody>, Dropped> {
    let normal = || sim.with_state(|state| service::respond(state, call, token));
    let response = match fault {
        None => respond(normal(), SimBody::whole),
        Some(Fault::Delay(delay)) => {
            tokio::time::sleep(delay).await;
            respond(normal(), SimBody::whole)
        }
        Some(Fault::Status {
            status,
            retry_after,
        }) => {
            let mut response = error(&ApiError::simulated(status));
            if let Some(seconds) = retry_after {
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(seconds));
            }
            response
        }
        Some(Fault::Hang) => {
            tracing::info!(method = ?call.method, "hanging: no answer");
            return std::future::pending().await;
        }
        Some(Fault::Reset) => {
            tracing::info!(method = ?call.method, "reset: no answer");
            return Err(Dropped);
        }
        Some(Fault::ResetMidBody) => match normal() {
            Ok(message) => ok(SimBody::cut_in_half(frame(&message))),
            // No message to cut: the head of an answer, then the reset.
            Err(_) => ok(SimBody::cut_in_half(Bytes::new())),
        },
        Some(Fault::SlowDrip(interval)) => {
            respond(normal(), |framed| SimBody::dripped(framed, interval))
        }
        Some(Fault::Garbage) => respond(Ok(Bytes::from_static(GARBAGE)), SimBody::whole),
        Some(Fault::WrongId) => {
            let mut image = convert::image(&fault_image(sim, call.image_id.as_deref()));
            image.id = other_image_id(&image.id);
            respond(Ok(Bytes::from(image.encode_to_vec())), SimBody::whole)
        }
        Some(Fault::HugeBody(size)) => {
            let image = convert::image(&fault_image(sim, call.image_id.as_deref()));
            let (prefix, pad, suffix) = padded_image(image, size);
            let body = SimBody::padded(prefix, pad, suffix);
            ok(body.with_trailers(ok_trailers()))
        }
    };
    Ok(response)
}

/// The answer to a message or an error: the message framed, delivered as `deliver` makes it,
/// then the OK trailers; or the error, trailers-only.
fn respond(
    result: Result<Bytes, ApiError>,
    deliver: impl FnOnce(Bytes) -> SimBody,
) -> Response<SimBody> {
    match result {
        Ok(message) => ok(deliver(frame(&message)).with_trailers(ok_trailers())),
        Err(api_error) => error(&api_error),
    }
}

/// The head of an answer (`200`, `application/grpc`, the API's request and trace IDs) and
/// `body`, whose length it does not announce (the message prefix does).
fn ok(body: SimBody) -> Response<SimBody> {
    let mut response = Response::new(body.unannounced());
    add_head(response.headers_mut(), &request_id());
    response
}

fn add_head(headers: &mut HeaderMap, request_id: &str) {
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    for (name, value) in [
        ("x-request-id", request_id),
        ("x-server-trace-id", &trace_id()),
    ] {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    }
}

fn ok_trailers() -> HeaderMap {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    trailers
}

/// A trailers-only error answer: `grpc-status`, `grpc-message` and `grpc-status-details-bin`
/// (a `google.rpc.Status` whose `RequestInfo` has the answer's `x-request-id`) in the head.
pub(crate) fn error(api_error: &ApiError) -> Response<SimBody> {
    let request_id = request_id();
    let request_info = rpc::RequestInfo {
        request_id: request_id.clone(),
        serving_data: String::new(),
    };
    let code = i32::try_from(api_error.code).unwrap_or(Code::Unknown as i32);
    let details = rpc::Status {
        code,
        message: api_error.message.clone(),
        details: vec![protobuf::Any {
            type_url: REQUEST_INFO_TYPE.to_owned(),
            value: request_info.encode_to_vec(),
        }],
    };
    let status = tonic::Status::with_details(
        Code::from_i32(code),
        api_error.message.clone(),
        Bytes::from(details.encode_to_vec()),
    );
    let mut response = Response::new(SimBody::whole(Bytes::new()).unannounced());
    add_head(response.headers_mut(), &request_id);
    if let Err(error) = status.add_header(response.headers_mut()) {
        // Our messages are percent-encoded and our details base64: this cannot happen.
        tracing::warn!(%error, "gRPC status not representable in headers");
    }
    response
}

/// A message with its 5-byte prefix: uncompressed, the big-endian length.
pub(crate) fn frame(message: &[u8]) -> Bytes {
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.put_u8(0);
    framed.put_u32(message.len() as u32);
    framed.put_slice(message);
    framed.freeze()
}

/// The framed `image` with a description of `x` padding the message to exactly `size` bytes
/// (or without one when `size` is too small): the fields before 5, the padded field 5, the
/// fields after it, as an encoder orders them. Returned as a prefix, the pad length and a
/// suffix, for [`SimBody::padded`].
fn padded_image(image: SimImage, size: usize) -> (Bytes, usize, Bytes) {
    let head = SimImage {
        id: image.id.clone(),
        folder_id: image.folder_id.clone(),
        name: image.name.clone(),
        ..SimImage::default()
    }
    .encode_to_vec();
    let tail = SimImage {
        id: String::new(),
        folder_id: String::new(),
        name: String::new(),
        description: String::new(),
        ..image
    }
    .encode_to_vec();
    let mut prefix = BytesMut::new();
    prefix.put_u8(0);
    let fixed = head.len() + 1 + tail.len();
    let Some(room) = size.checked_sub(fixed).filter(|room| *room > 0) else {
        prefix.put_u32((head.len() + tail.len()) as u32);
        prefix.put_slice(&head);
        return (prefix.freeze(), 0, Bytes::from(tail));
    };
    // The pad and its length fill the room. The length takes as many bytes as the room's
    // would, even where the pad's alone would take one less (a varint may have trailing
    // zero groups), so that every size can be met exactly.
    let width = encoded_len_varint(room as u64);
    let pad = room - width;
    prefix.put_u32(size as u32);
    prefix.put_slice(&head);
    prefix.put_u8(DESCRIPTION_KEY);
    put_varint(&mut prefix, pad as u64, width);
    (prefix.freeze(), pad, Bytes::from(tail))
}

/// `value` as a varint of exactly `width` bytes (at least its minimal width).
fn put_varint(buf: &mut BytesMut, mut value: u64, width: usize) {
    for i in 0..width {
        let more = if i + 1 < width { 0x80 } else { 0 };
        buf.put_u8((value & 0x7f) as u8 | more);
        value >>= 7;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::{sim_only_field, Image};
    use crate::model;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn padded_images_are_valid_messages_of_the_asked_size() {
        let image = convert::image(&model::Image::ready("ly5alice0ready000001", "f", "n"));
        // 129 and 16_386 bytes of room need a length one byte longer than the pad's own.
        let (prefix, _, suffix) = padded_image(image.clone(), 0);
        let fixed = prefix.len() - 5 + 1 + suffix.len();
        for size in [
            0,
            60,
            fixed + 1,
            fixed + 129,
            fixed + 16_386,
            200,
            3_000_000,
        ] {
            let (prefix, pad, suffix) = padded_image(image.clone(), size);
            let body = SimBody::padded(prefix, pad, suffix);
            let framed = body.collect().await.unwrap().to_bytes();
            let length = u32::from_be_bytes(framed[1..5].try_into().unwrap()) as usize;
            assert_eq!(length, framed.len() - 5, "{size}");
            let message = &framed[5..];
            let decoded = Image::decode(message).unwrap();
            assert_eq!(decoded.id, "ly5alice0ready000001");
            assert!(decoded.description.bytes().all(|b| b == b'x'));
            assert!(sim_only_field(message).is_some());
            if size > fixed {
                assert_eq!(message.len(), size);
            }
        }
    }

    #[test]
    fn garbage_is_no_image() {
        assert!(Image::decode(GARBAGE).is_err());
    }

    #[test]
    fn errors_are_trailers_only_with_details() {
        let response = error(&ApiError::image_not_found("ly5a"));
        let headers = response.headers();
        assert_eq!(headers["grpc-status"], "5");
        assert_eq!(headers["grpc-message"], "Image%20ly5a%20not%20found");
        let status = tonic::Status::from_header_map(headers).unwrap();
        let details = rpc::Status::decode(status.details()).unwrap();
        let info = rpc::RequestInfo::decode(details.details[0].value.as_slice()).unwrap();
        assert_eq!(info.request_id, headers["x-request-id"].to_str().unwrap());
        assert_eq!(details.code, 5);
    }
}
