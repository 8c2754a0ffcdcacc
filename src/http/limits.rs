//! The limits on what a client sends, the same for both front-ends: how many headers, how big
//! a request body and how long a pause in it. A reload changes them for requests that arrive
//! from then on.

use crate::config::Config;
use crate::tunable::{TunableCount, TunableDuration};

use super::upload::UploadLimits;

pub struct RequestLimits {
    max_headers: TunableCount,
    max_body: TunableCount,
    body_idle: TunableDuration,
}

impl RequestLimits {
    pub fn new(config: &Config) -> RequestLimits {
        RequestLimits {
            max_headers: TunableCount::new(config.max_headers as u64),
            max_body: TunableCount::new(config.max_request_body),
            body_idle: TunableDuration::new(config.request_body_timeout),
        }
    }

    /// Takes the limits of a reloaded configuration.
    pub fn retune(&self, config: &Config) {
        self.max_headers.set(config.max_headers as u64);
        self.max_body.set(config.max_request_body);
        self.body_idle.set(config.request_body_timeout);
    }

    /// `--max-headers`.
    pub fn max_headers(&self) -> usize {
        self.max_headers.get_usize()
    }

    /// `--max-request-body` and `--request-body-timeout`, as one request's body is held to.
    pub fn uploads(&self) -> UploadLimits {
        UploadLimits {
            max: self.max_body.get(),
            idle: self.body_idle.get(),
        }
    }
}
