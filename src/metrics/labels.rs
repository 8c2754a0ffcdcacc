//! The values of metric labels that are not the metrics' own: why entries were dropped,
//! why requests were turned away, the upstream's status codes. Each comes from a fixed set,
//! so nothing a request or the upstream sends can create series.

/// Why an entry was dropped by the proxy (not by moka on its own).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvalidationReason {
    Creating,
    Updating,
    Deleting,
    Error,
    Unspecified,
    NotFound,
    Mutation,
    Purge,
    /// Another instance of the fleet invalidated it (or the fleet's messages had a gap).
    Fleet,
}

impl InvalidationReason {
    pub const ALL: [InvalidationReason; 9] = [
        InvalidationReason::Creating,
        InvalidationReason::Updating,
        InvalidationReason::Deleting,
        InvalidationReason::Error,
        InvalidationReason::Unspecified,
        InvalidationReason::NotFound,
        InvalidationReason::Mutation,
        InvalidationReason::Purge,
        InvalidationReason::Fleet,
    ];

    /// The reason for an image body whose status is not READY.
    pub fn for_status(status: Option<&str>) -> InvalidationReason {
        match status {
            Some("CREATING") => InvalidationReason::Creating,
            Some("UPDATING") => InvalidationReason::Updating,
            Some("DELETING") => InvalidationReason::Deleting,
            Some("ERROR") => InvalidationReason::Error,
            _ => InvalidationReason::Unspecified,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            InvalidationReason::Creating => "creating",
            InvalidationReason::Updating => "updating",
            InvalidationReason::Deleting => "deleting",
            InvalidationReason::Error => "error",
            InvalidationReason::Unspecified => "unspecified",
            InvalidationReason::NotFound => "not_found",
            InvalidationReason::Mutation => "mutation",
            InvalidationReason::Purge => "purge",
            InvalidationReason::Fleet => "fleet",
        }
    }
}

/// Why the proxy turned a request or connection away itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// `--max-connections` reached.
    Connections,
    /// `--max-upstream-requests` reached.
    UpstreamBusy,
    /// `--max-waiters-per-key` or `--max-waiters` reached.
    Waiters,
    /// `--max-request-body` exceeded.
    RequestBody,
    /// A request body paused for longer than `--request-body-timeout`.
    RequestBodyTimeout,
    /// More request headers than `--max-headers` (HTTP/2; hyper answers HTTP/1's itself).
    Headers,
    /// A method, transfer coding or upgrade the proxy does not support.
    NotImplemented,
    /// A request target that is not a path.
    Target,
    /// The admin listener's connection cap reached.
    AdminConnections,
    /// A purge without the admin token (`--admin-token-file`), or with a wrong one.
    AdminUnauthorized,
    /// A purge from a client not on loopback, with no admin token configured.
    AdminForbidden,
}

impl Rejection {
    pub const ALL: [Rejection; 11] = [
        Rejection::Connections,
        Rejection::UpstreamBusy,
        Rejection::Waiters,
        Rejection::RequestBody,
        Rejection::RequestBodyTimeout,
        Rejection::Headers,
        Rejection::NotImplemented,
        Rejection::Target,
        Rejection::AdminConnections,
        Rejection::AdminUnauthorized,
        Rejection::AdminForbidden,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::Connections => "connections",
            Rejection::UpstreamBusy => "upstream_busy",
            Rejection::Waiters => "waiters",
            Rejection::RequestBody => "request_body",
            Rejection::RequestBodyTimeout => "request_body_timeout",
            Rejection::Headers => "headers",
            Rejection::NotImplemented => "not_implemented",
            Rejection::Target => "target",
            Rejection::AdminConnections => "admin_connections",
            Rejection::AdminUnauthorized => "admin_unauthorized",
            Rejection::AdminForbidden => "admin_forbidden",
        }
    }
}

/// The `code` label: the status as three digits, from a fixed set so that a broken upstream
/// cannot create series at will.
pub fn status_label(status: u16) -> &'static str {
    const KNOWN: &[(u16, &str)] = &[
        (200, "200"),
        (201, "201"),
        (202, "202"),
        (204, "204"),
        (301, "301"),
        (302, "302"),
        (304, "304"),
        (400, "400"),
        (401, "401"),
        (403, "403"),
        (404, "404"),
        (405, "405"),
        (409, "409"),
        (412, "412"),
        (413, "413"),
        (429, "429"),
        (499, "499"),
        (500, "500"),
        (501, "501"),
        (502, "502"),
        (503, "503"),
        (504, "504"),
    ];
    if let Some((_, label)) = KNOWN.iter().find(|(code, _)| *code == status) {
        return label;
    }
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// The gRPC status codes by number, as the `grpc_status` label spells them.
pub const GRPC_STATUSES: [&str; 18] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
    "OTHER",
];

/// The `grpc_status` label of a `grpc-status` value: its name, or `OTHER` for anything that
/// is not one of the 17 codes (a broken upstream cannot create series).
pub fn grpc_status_label(value: &http::HeaderValue) -> &'static str {
    std::str::from_utf8(value.as_bytes())
        .ok()
        .and_then(|text| text.trim().parse::<usize>().ok())
        .and_then(|code| GRPC_STATUSES.get(code).filter(|_| code < 17))
        .copied()
        .unwrap_or("OTHER")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_labels_come_from_a_fixed_set() {
        assert_eq!(status_label(200), "200");
        assert_eq!(status_label(418), "4xx");
        assert_eq!(status_label(999), "5xx");
        let grpc = |text: &'static str| grpc_status_label(&http::HeaderValue::from_static(text));
        assert_eq!(grpc("0"), "OK");
        assert_eq!(grpc("14"), "UNAVAILABLE");
        assert_eq!(grpc("16"), "UNAUTHENTICATED");
        assert_eq!(grpc("17"), "OTHER");
        assert_eq!(grpc("oops"), "OTHER");
    }
}
