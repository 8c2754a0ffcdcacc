//! Injected faults: what can go wrong, where, and for how many requests.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Which requests a fault applies to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Deserialize)]
pub enum FaultScope {
    /// Every API request.
    All,
    /// Requests whose path is exactly `/baremetal/v1alpha/images/{id}` (any method, any query),
    /// and gRPC Get, Update and Delete calls whose message's `image_id` is `{id}`.
    Image(String),
}

/// How the simulator misbehaves for a matching request. See the crate docs for the JSON form
/// and for what each fault does to a gRPC call.
#[derive(Clone, Debug, Deserialize)]
pub enum Fault {
    /// Answer normally, after this delay.
    #[serde(deserialize_with = "humantime_duration")]
    Delay(Duration),
    /// Answer this status in the API's error shape (gRPC code from the API's table), with
    /// `Retry-After` if given. A number that is no HTTP status answers 500.
    Status {
        status: u16,
        retry_after: Option<u32>,
    },
    /// Read the request and never answer (until shutdown or the client leaves).
    Hang,
    /// Close the connection without any answer.
    Reset,
    /// Send the normal answer's head (with its full `Content-Length`) and half its body, then
    /// close the connection.
    ResetMidBody,
    /// 200, `application/json`, a body that is not JSON.
    Garbage,
    /// 200 with a READY image whose `id` is a different valid ID.
    WrongId,
    /// 200 with a valid READY image for the requested ID, its description padded so the body
    /// is this many bytes; streamed in 64 KiB chunks.
    HugeBody(usize),
    /// The normal answer, its body sent one byte per interval.
    #[serde(deserialize_with = "humantime_duration")]
    SlowDrip(Duration),
}

/// Durations in the control API are humantime strings: `"200ms"`, `"2s"`, `"1m"`.
fn humantime_duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(&text).map_err(serde::de::Error::custom)
}

/// The gRPC code the API pairs with an HTTP status (`errors-handling.md`); for statuses that
/// several codes share, the one a server would most likely send.
pub(crate) fn grpc_code(status: u16) -> u32 {
    match status {
        499 => 1,
        400 => 3,
        504 => 4,
        404 => 5,
        409 => 10,
        403 => 7,
        429 => 8,
        500 => 13,
        501 => 12,
        502 | 503 => 14,
        401 => 16,
        _ => 2,
    }
}

/// The armed faults, at most one per scope.
#[derive(Default)]
pub(crate) struct Faults {
    armed: HashMap<FaultScope, Armed>,
}

struct Armed {
    fault: Fault,
    /// Matching requests it still applies to; `None`: until cleared.
    remaining: Option<u32>,
}

impl Faults {
    /// Arms `fault` for `scope`, replacing what was armed there; `times: Some(0)` disarms it.
    pub(crate) fn set(&mut self, scope: FaultScope, fault: Fault, times: Option<u32>) {
        if times == Some(0) {
            self.armed.remove(&scope);
        } else {
            let armed = Armed {
                fault,
                remaining: times,
            };
            self.armed.insert(scope, armed);
        }
    }

    pub(crate) fn clear(&mut self) {
        self.armed.clear();
    }

    /// The fault for a request (on image `image_id`, if its path is `/images/{id}`), using up
    /// one of its `times`. The image scope wins over `All`.
    pub(crate) fn take(&mut self, image_id: Option<&str>) -> Option<Fault> {
        if self.armed.is_empty() {
            return None;
        }
        let image_scope = image_id.map(|id| FaultScope::Image(id.to_owned()));
        let scope = [image_scope, Some(FaultScope::All)]
            .into_iter()
            .flatten()
            .find(|scope| self.armed.contains_key(scope))?;
        let armed = self.armed.get_mut(&scope)?;
        let fault = armed.fault.clone();
        match &mut armed.remaining {
            Some(1) => {
                self.armed.remove(&scope);
            }
            Some(n) => *n -= 1,
            None => {}
        }
        Some(fault)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_deserialize_from_the_documented_json() {
        let parse = |json: &str| serde_json::from_str::<Fault>(json).unwrap();
        assert!(matches!(parse(r#""Hang""#), Fault::Hang));
        assert!(
            matches!(parse(r#"{"Delay":"200ms"}"#), Fault::Delay(d) if d == Duration::from_millis(200))
        );
        assert!(matches!(
            parse(r#"{"HugeBody":1024}"#),
            Fault::HugeBody(1024)
        ));
        assert!(matches!(
            parse(r#"{"Status":{"status":503}}"#),
            Fault::Status {
                status: 503,
                retry_after: None
            }
        ));
        assert!(serde_json::from_str::<Fault>(r#"{"SlowDrip":"soon"}"#).is_err());
        let scope: FaultScope = serde_json::from_str(r#"{"Image":"ly5x"}"#).unwrap();
        assert_eq!(scope, FaultScope::Image("ly5x".into()));
    }

    #[test]
    fn image_scope_wins_and_times_run_out() {
        let mut faults = Faults::default();
        faults.set(FaultScope::All, Fault::Hang, None);
        faults.set(FaultScope::Image("ly5a".into()), Fault::Reset, Some(2));
        assert!(matches!(faults.take(Some("ly5a")), Some(Fault::Reset)));
        assert!(matches!(faults.take(Some("ly5b")), Some(Fault::Hang)));
        assert!(matches!(faults.take(Some("ly5a")), Some(Fault::Reset)));
        assert!(matches!(faults.take(Some("ly5a")), Some(Fault::Hang)));
        faults.set(FaultScope::All, Fault::Hang, Some(0));
        assert!(faults.take(None).is_none());
    }

    #[test]
    fn grpc_codes_follow_the_table() {
        assert_eq!(
            [503, 429, 500, 504, 502, 418].map(grpc_code),
            [14, 8, 13, 4, 14, 2]
        );
    }
}
