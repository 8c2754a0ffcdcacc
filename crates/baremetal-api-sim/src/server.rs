//! The HTTP side: the accept loop, one hyper connection per client (HTTP/1.1 or h2c), and
//! each API request's path through recording, faults and the API.

use std::future::Future;
use std::io;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use http::request::Parts;
use http::{HeaderMap, Method, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::api::{self, ApiRequest};
use super::body::SimBody;
use super::error::ApiError;
use super::model::{other_image_id, request_id, trace_id, Image, READY};
use super::{control, grpc, Fault, RecordedRequest, Simulator};

/// Largest request body the simulator reads; beyond it answers 413.
const MAX_REQUEST_BODY: usize = 16 * 1024 * 1024;
/// How long to wait before accepting again after `accept` failed (e.g. out of descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// Control calls live under this prefix; they are neither counted nor recorded.
const CONTROL_PREFIX: &str = "/_sim/";
/// The `Garbage` fault's body: starts like an image, then is not JSON at all.
const GARBAGE: &[u8] = b"{\"status\":\"READY\",<html><body>502 Bad Gateway</body></html>";
/// Folder and image ID for fault answers that need an image when the request names none.
const FAULT_FOLDER: &str = "b1gsimulatedfolder01";
const FAULT_IMAGE: &str = "ly5simulatedimage001";

pub(crate) async fn serve(
    sim: Simulator,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    // Connections watch this and end, hung requests and all, once it turns true (or the
    // sender is dropped because `serve` itself was dropped).
    let (stop, stopped) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(connection(sim.clone(), stream, stopped.clone()));
                }
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            // Reap finished connections so the set does not grow without bound.
            Some(_) = connections.join_next() => {}
        }
    }
    drop(listener);
    stop.send_replace(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

async fn connection(sim: Simulator, stream: TcpStream, mut stopped: watch::Receiver<bool>) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "TCP_NODELAY not set");
    }
    let service = service_fn(move |request| handle(sim.clone(), request));
    let builder = auto::Builder::new(TokioExecutor::new());
    let served = builder.serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        result = served => {
            if let Err(error) = result {
                tracing::debug!(%error, "connection ended with an error");
            }
        }
        _ = stopped.wait_for(|stop| *stop) => {}
    }
}

/// The service's error: hyper then closes the connection without writing an answer.
#[derive(Debug)]
pub(crate) struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by the simulator")
    }
}

impl std::error::Error for Dropped {}

async fn handle(sim: Simulator, request: Request<Incoming>) -> Result<Response<SimBody>, Dropped> {
    let (parts, body) = request.into_parts();
    let target = raw_target(&parts);
    let body = if grpc::is_grpc(&parts.headers) && !grpc::has_method(parts.uri.path()) {
        // A gRPC server answers a method it does not have from the call's head alone (tonic's
        // router does): a streaming client may wait for that answer before it ends its body.
        // Nothing of the body is read, so nothing of it is recorded.
        drop(body);
        Ok(Bytes::new())
    } else {
        read_body(body).await
    };
    if let Some(path) = target.strip_prefix(CONTROL_PREFIX) {
        return Ok(control::handle(&sim, &parts.method, path, body));
    }
    let read = body.as_ref().map_or_else(|_| Bytes::new(), Bytes::clone);
    let grpc = grpc::is_grpc(&parts.headers).then(|| grpc::Call::parse(parts.uri.path(), &read));
    // What recording and fault scopes take from the request, per protocol: REST's image is in
    // the path, a gRPC call's in its message.
    let (recorded_body, unknown_fields, image_id) = match &grpc {
        Some(call) => (
            call.recorded_body(&read),
            call.unknown_fields.clone(),
            call.image_id.as_deref(),
        ),
        None => (read, Vec::new(), api::image_path_id(&target)),
    };
    let grpc_get = grpc.as_ref().filter(|call| call.is_get()).and(image_id);
    let fault = sim.with_state(|state| {
        let recorded = RecordedRequest {
            method: parts.method.clone(),
            target: target.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
            body: recorded_body,
            unknown_fields,
        };
        state.traffic.record(recorded, grpc_get);
        state.faults.take(image_id)
    });
    let body = match body {
        Ok(body) => body,
        Err(BodyError::TooLarge) => {
            let response = match grpc {
                Some(_) => grpc::error(&too_large()),
                None => json_response(Err(too_large()), SimBody::whole),
            };
            return Ok(log(&parts, &target, None, response));
        }
        Err(BodyError::Broken) => return Err(Dropped),
    };
    let token = bearer_token(&parts.headers);
    let mut response = match &grpc {
        Some(call) => grpc::answer(&sim, call, token, fault.clone()).await?,
        None => {
            let request = ApiRequest {
                method: &parts.method,
                target: &target,
                token,
                body: &body,
            };
            answer(&sim, &request, fault.clone()).await?
        }
    };
    sim.with_state(|state| {
        for (name, value) in &state.extra_headers {
            if let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                response.headers_mut().append(name, value);
            }
        }
    });
    if parts.method == Method::HEAD {
        response = without_body(response);
    }
    Ok(log(&parts, &target, fault, response))
}

/// A HEAD answer: the headers, `Content-Length` of the body included, and no body. Hyper
/// drops HEAD bodies itself over HTTP/1.1, but over HTTP/2 it would send them.
fn without_body(response: Response<SimBody>) -> Response<SimBody> {
    let (mut parts, body) = response.into_parts();
    let length = body.size_hint().exact().unwrap_or(0);
    parts
        .headers
        .insert(CONTENT_LENGTH, HeaderValue::from(length));
    Response::from_parts(parts, SimBody::whole(Bytes::new()))
}

/// One info line per API request (with `grpc_status` for a gRPC error); never the
/// `Authorization` value.
fn log(
    parts: &Parts,
    target: &str,
    fault: Option<Fault>,
    response: Response<SimBody>,
) -> Response<SimBody> {
    let status = response.status().as_u16();
    let grpc_status = response.headers().get("grpc-status");
    match grpc_status.and_then(|code| code.to_str().ok()) {
        // A gRPC error: the code is in the head. (An OK answer's is in its trailers.)
        Some(grpc_status) => {
            tracing::info!(method = %parts.method, target, status, grpc_status, ?fault, "request");
        }
        None => tracing::info!(method = %parts.method, target, status, ?fault, "request"),
    }
    response
}

/// What the request gets: the API's answer, or what the armed fault makes of it.
async fn answer(
    sim: &Simulator,
    request: &ApiRequest<'_>,
    fault: Option<Fault>,
) -> Result<Response<SimBody>, Dropped> {
    let normal = || sim.with_state(|state| api::respond(state, request));
    let response = match fault {
        None => json_response(normal(), SimBody::whole),
        Some(Fault::Delay(delay)) => {
            tokio::time::sleep(delay).await;
            json_response(normal(), SimBody::whole)
        }
        Some(Fault::Status {
            status,
            retry_after,
        }) => status_fault(status, retry_after),
        Some(Fault::Hang) => {
            tracing::info!(method = %request.method, target = request.target, "hanging: no answer");
            return std::future::pending().await;
        }
        Some(Fault::Reset) => {
            tracing::info!(method = %request.method, target = request.target, "reset: no answer");
            return Err(Dropped);
        }
        Some(Fault::ResetMidBody) => json_response(normal(), SimBody::cut_in_half),
        Some(Fault::SlowDrip(interval)) => {
            json_response(normal(), |body| SimBody::dripped(body, interval))
        }
        Some(Fault::Garbage) => json_response(Ok(Bytes::from_static(GARBAGE)), SimBody::whole),
        Some(Fault::WrongId) => {
            let image = fault_image(sim, api::image_path_id(request.target));
            let wrong = Image {
                id: other_image_id(&image.id),
                ..image
            };
            json_response(api::to_json(&wrong), SimBody::whole)
        }
        Some(Fault::HugeBody(size)) => {
            let image = Image {
                description: String::new(),
                ..fault_image(sim, api::image_path_id(request.target))
            };
            json_response(api::to_json(&image), |json| pad_description(json, size))
        }
    };
    Ok(response)
}

/// The requested image as a READY image, for faults that answer with one: the stored image
/// when there is one, a made-up one otherwise (or when the request names no image).
pub(crate) fn fault_image(sim: &Simulator, id: Option<&str>) -> Image {
    let id = id.unwrap_or(FAULT_IMAGE);
    let stored = sim.image(id);
    let image = stored.unwrap_or_else(|| Image::ready(id, FAULT_FOLDER, "simulated-image"));
    Image {
        status: READY.to_owned(),
        ..image
    }
}

/// Pads the empty description of an image's JSON so the whole body is `size` bytes.
fn pad_description(json: Bytes, size: usize) -> SimBody {
    const EMPTY_DESCRIPTION: &[u8] = b"\"description\":\"\"";
    let Some(at) = json
        .windows(EMPTY_DESCRIPTION.len())
        .position(|window| window == EMPTY_DESCRIPTION)
    else {
        return SimBody::whole(json);
    };
    let split = at + EMPTY_DESCRIPTION.len() - 1;
    let pad = size.saturating_sub(json.len());
    SimBody::padded(json.slice(..split), pad, json.slice(split..))
}

fn status_fault(status: u16, retry_after: Option<u32>) -> Response<SimBody> {
    let mut response = json_response(Err(ApiError::simulated(status)), SimBody::whole);
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

fn too_large() -> ApiError {
    // RESOURCE_EXHAUSTED, what gRPC reports for an oversized message.
    let message = format!("Request body is larger than {MAX_REQUEST_BODY} bytes");
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, 8, message)
}

/// An API response: 200 with `body`, or the error in the API's shape; the body delivered
/// as `deliver` makes it; the headers every API response has.
fn json_response(
    result: Result<Bytes, ApiError>,
    deliver: impl FnOnce(Bytes) -> SimBody,
) -> Response<SimBody> {
    let request_id = request_id();
    let (status, body) = match result {
        Ok(body) => (StatusCode::OK, body),
        Err(error) => (error.status, error.json_body(&request_id)),
    };
    let mut response = Response::new(deliver(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for (name, value) in [
        ("x-request-id", request_id),
        ("x-server-trace-id", trace_id()),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    response
}

/// The request target exactly as received: path and `?query`, never decoded.
fn raw_target(parts: &Parts) -> String {
    parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned())
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

pub(crate) enum BodyError {
    TooLarge,
    /// The client went away or sent a malformed body.
    Broken,
}

/// Reads the whole request body, up to [`MAX_REQUEST_BODY`].
async fn read_body(body: Incoming) -> Result<Bytes, BodyError> {
    match Limited::new(body, MAX_REQUEST_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => Err(BodyError::TooLarge),
        Err(_) => Err(BodyError::Broken),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_taken_from_the_authorization_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer_token(&headers), None);
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer t1.abc"));
        assert_eq!(bearer_token(&headers), Some("t1.abc"));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("bearer t1.abc"));
        assert_eq!(bearer_token(&headers), Some("t1.abc"));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Api-Key t1.abc"));
        assert_eq!(bearer_token(&headers), None);
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer_token(&headers), None);
    }

    #[tokio::test]
    async fn padded_descriptions_keep_the_json_valid() {
        let json = api::to_json(&Image::ready("ly5alice0ready000001", "f", "n")).unwrap();
        let body = pad_description(json, 200_000)
            .collect()
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(body.len(), 200_000);
        let image: Image = serde_json::from_slice(&body).unwrap();
        assert_eq!(image.id, "ly5alice0ready000001");
        assert!(image.description.bytes().all(|b| b == b'x'));
    }
}
