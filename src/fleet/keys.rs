//! The names of every key and channel. `R` is `--redis-prefix`, `P` is `R` plus the auth
//! mode (instances in different modes never share values); `{id}` is a cluster hash tag, so
//! all of one image's keys live on one slot and a script can touch them together.

use crate::config::AuthMode;

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

    /// `P image:{id}`: the shared answer.
    pub(super) fn image(&self, id: &str) -> String {
        format!("{}image:{{{id}}}", self.keys)
    }

    /// The image's values in every mode: an invalidation reaches instances in the other.
    pub(super) fn image_in_every_mode(&self, id: &str) -> [String; 2] {
        [AuthMode::Shared, AuthMode::PerCredential]
            .map(|mode| format!("{}{}:image:{{{id}}}", self.shared, mode.as_str()))
    }

    /// `R gen:{id}`: the image's invalidation generation, one for both modes.
    pub(super) fn generation(&self, id: &str) -> String {
        format!("{}gen:{{{id}}}", self.shared)
    }

    /// `P grant:{id}:HMAC`: this credential may read this image.
    pub(super) fn grant(&self, id: &str, record: &str) -> String {
        format!("{}grant:{{{id}}}:{record}", self.keys)
    }

    /// `P lease:{id}[:HMAC]`: one instance's right to fetch (per credential when reads are
    /// the credential's own).
    pub(super) fn lease(&self, id: &str, reader: &Reader) -> String {
        self.per_reader("lease", id, reader)
    }

    /// `P pass:{id}[:HMAC]`: waiters fetch on their own for a moment.
    pub(super) fn pass(&self, id: &str, reader: &Reader) -> String {
        self.per_reader("pass", id, reader)
    }

    fn per_reader(&self, kind: &str, id: &str, reader: &Reader) -> String {
        match reader {
            Reader::Credential(record) => format!("{}{kind}:{{{id}}}:{record}", self.keys),
            Reader::Anyone => format!("{}{kind}:{{{id}}}", self.keys),
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
