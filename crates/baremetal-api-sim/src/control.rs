//! The control API under `/_sim/` (forms documented in the crate docs):
//! for harnesses that drive a simulator running in another process. Not counted, not
//! recorded, never faulted.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Response, StatusCode};
use serde::{Deserialize, Serialize};

use super::body::SimBody;
use super::server::BodyError;
use super::{Fault, FaultScope, Simulator};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultRequest {
    scope: FaultScope,
    fault: Fault,
    times: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusRequest {
    status: String,
}

#[derive(Serialize)]
struct Stats<'a> {
    requests: u64,
    image_get: BTreeMap<&'a str, u64>,
    grpc_image_get: BTreeMap<&'a str, u64>,
}

/// A control call's failure: its status and a short message.
type ControlError = (StatusCode, String);

/// Answers a control call on `/_sim/{path}`.
pub(crate) fn handle(
    sim: &Simulator,
    method: &Method,
    path: &str,
    body: Result<Bytes, BodyError>,
) -> Response<SimBody> {
    let result = match (method.as_str(), path) {
        ("GET", "stats") => stats(sim),
        ("POST", "fault") => parse(body).and_then(|request| set_fault(sim, request)),
        ("DELETE", "fault") => {
            sim.clear_faults();
            Ok(None)
        }
        ("POST", "reset") => {
            sim.reset_counts();
            sim.clear_faults();
            Ok(None)
        }
        ("POST", path) => match status_path_id(path) {
            Some(id) => parse(body).and_then(|request| set_status(sim, id, request)),
            None => Err(unknown_endpoint()),
        },
        _ => Err(unknown_endpoint()),
    };
    match result {
        Ok(Some(body)) => json(StatusCode::OK, body),
        Ok(None) => json(StatusCode::NO_CONTENT, Bytes::new()),
        Err((status, message)) => {
            let body = serde_json::json!({ "error": message }).to_string();
            json(status, Bytes::from(body))
        }
    }
}

fn unknown_endpoint() -> ControlError {
    (StatusCode::NOT_FOUND, "unknown control endpoint".to_owned())
}

/// `{"requests": N, "image_get": {"<id>": n, ...}, "grpc_image_get": {"<id>": n, ...}}`.
fn stats(sim: &Simulator) -> Result<Option<Bytes>, ControlError> {
    let stats = sim.with_state(|state| {
        let stats = Stats {
            requests: state.traffic.total(),
            image_get: state.traffic.image_gets(),
            grpc_image_get: state.traffic.grpc_image_gets(),
        };
        serde_json::to_vec(&stats)
    });
    let stats = stats.map_err(|error| (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()))?;
    Ok(Some(Bytes::from(stats)))
}

fn set_fault(sim: &Simulator, request: FaultRequest) -> Result<Option<Bytes>, ControlError> {
    if let Fault::Status { status, .. } = &request.fault {
        if StatusCode::from_u16(*status).is_err() {
            let message = format!("{status} is not an HTTP status code");
            return Err((StatusCode::BAD_REQUEST, message));
        }
    }
    sim.set_fault(request.scope, request.fault, request.times);
    Ok(None)
}

fn set_status(
    sim: &Simulator,
    id: &str,
    request: StatusRequest,
) -> Result<Option<Bytes>, ControlError> {
    if sim.set_status(id, &request.status) {
        Ok(None)
    } else {
        Err((StatusCode::NOT_FOUND, format!("no image {id}")))
    }
}

/// The `{id}` of `images/{id}/status`.
fn status_path_id(path: &str) -> Option<&str> {
    let id = path.strip_prefix("images/")?.strip_suffix("/status")?;
    (!id.is_empty() && !id.contains('/')).then_some(id)
}

fn parse<T: for<'de> Deserialize<'de>>(body: Result<Bytes, BodyError>) -> Result<T, ControlError> {
    let body = body.map_err(|_| (StatusCode::BAD_REQUEST, "unreadable body".to_owned()))?;
    serde_json::from_slice(&body).map_err(|error| (StatusCode::BAD_REQUEST, error.to_string()))
}

fn json(status: StatusCode, body: Bytes) -> Response<SimBody> {
    let mut response = Response::new(SimBody::whole(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_paths_name_one_image() {
        assert_eq!(status_path_id("images/ly5a/status"), Some("ly5a"));
        assert_eq!(status_path_id("images//status"), None);
        assert_eq!(status_path_id("images/a/b/status"), None);
        assert_eq!(status_path_id("images/ly5a"), None);
    }

    #[test]
    fn fault_requests_take_the_documented_form() {
        let request: FaultRequest = serde_json::from_str(
            r#"{"scope":{"Image":"ly5a"},"fault":{"Status":{"status":503,"retry_after":2}},"times":1}"#,
        )
        .unwrap();
        assert_eq!(request.scope, FaultScope::Image("ly5a".into()));
        assert!(matches!(
            request.fault,
            Fault::Status {
                status: 503,
                retry_after: Some(2)
            }
        ));
        let request: FaultRequest =
            serde_json::from_str(r#"{"scope":"All","fault":{"Delay":"250ms"}}"#).unwrap();
        assert_eq!(request.times, None);
    }
}
