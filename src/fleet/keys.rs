//! The names of every key and channel. `R` is `--redis-prefix`, `P` is `R` plus the auth
//! mode (instances in different modes never share values); `{id}` is a cluster hash tag, so
//! all of one image's keys live on one slot and a script can touch them together. Values,
//! leases and passes are per protocol (REST and gRPC answers differ); grants and the
//! generation are the image's.

use crate::config::AuthMode;
use crate::image::Protocol;

use super::Reader;

pub(super) struct Keys {
    /// `P`: the start of every value, grant, lease and pass.
    keys: String,
    /// `R`: the start of what both modes share (generations, the purge time, channels).
    shared: String,
}

impl Keys {
    pub(super) fn new(prefix: &str, mode: AuthMode) -> Keys {
        Keys {
            keys: format!("{prefix}{}:", mode.as_str()),
            shared: prefix.to_string(),
        }
    }

    /// `P image:{id}` (REST) or `P grpc-image:{id}`: the shared answer.
    pub(super) fn image(&self, protocol: Protocol, id: &str) -> String {
        format!("{}{}image:{{{id}}}", self.keys, kind(protocol))
    }

    /// The image's values in every mode and protocol: an invalidation reaches them all.
    pub(super) fn image_everywhere(&self, id: &str) -> Vec<String> {
        [AuthMode::Shared, AuthMode::PerCredential]
            .into_iter()
            .flat_map(|mode| {
                Protocol::ALL.map(|protocol| {
                    let kind = kind(protocol);
                    format!("{}{}:{kind}image:{{{id}}}", self.shared, mode.as_str())
                })
            })
            .collect()
    }

    /// `R gen:{id}`: the image's invalidation generation, one for both modes.
    pub(super) fn generation(&self, id: &str) -> String {
        format!("{}gen:{{{id}}}", self.shared)
    }

    /// `P grant:{id}:HMAC`: this credential may read this image.
    pub(super) fn grant(&self, id: &str, record: &str) -> String {
        format!("{}grant:{{{id}}}:{record}", self.keys)
    }

    /// `P lease:{id}[:HMAC]` (or `grpc-lease`): one instance's right to fetch (per
    /// credential when reads are the credential's own).
    pub(super) fn lease(&self, protocol: Protocol, id: &str, reader: &Reader) -> String {
        self.per_reader(protocol, "lease", id, reader)
    }

    /// `P pass:{id}[:HMAC]` (or `grpc-pass`): waiters fetch on their own for a moment.
    pub(super) fn pass(&self, protocol: Protocol, id: &str, reader: &Reader) -> String {
        self.per_reader(protocol, "pass", id, reader)
    }

    fn per_reader(&self, protocol: Protocol, name: &str, id: &str, reader: &Reader) -> String {
        let kind = kind(protocol);
        match reader {
            Reader::Credential(record) => {
                format!("{}{kind}{name}:{{{id}}}:{record}", self.keys)
            }
            Reader::Anyone => format!("{}{kind}{name}:{{{id}}}", self.keys),
        }
    }

    /// `R purged-at`: the time of the last purge of everything.
    pub(super) fn purged_at(&self) -> String {
        format!("{}purged-at", self.shared)
    }

    /// `R name`: a pub/sub channel.
    pub(super) fn channel(&self, name: &str) -> String {
        format!("{}{name}", self.shared)
    }
}

/// What sets a protocol's keys apart: nothing for REST (the keys it has always had), `grpc-`
/// for gRPC. Grants and generations belong to the image, whatever protocol read it.
fn kind(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Http => "",
        Protocol::Grpc => "grpc-",
    }
}
