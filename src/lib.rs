//! baremetal-image-cache: a read-through caching proxy for the Yandex Cloud BareMetal API.
//!
//! It serves Image.Get (`GET /baremetal/v1alpha/images/{imageId}`) from an in-memory TTL
//! cache, shares one upstream fetch among concurrent misses, and passes every other request
//! through untouched.
//!
//! # How a request flows
//!
//! ```text
//! server ──> proxy ──> route      (pure: method + raw target -> Route)
//!                 ├──> auth       (Authorization -> keyed fingerprint)
//!                 ├──> cache      (moka: entries, freshness, grants, invalidation)
//!                 ├──> coalesce   (one flight per key; leader task, waiters)
//!                 ├──> fleet      (optional Redis tier: shared values, leases, invalidation)
//!                 ├──> upstream   (hyper-util client, rustls, timeouts, error mapping)
//!                 └──> outcome    (hit | miss | stale | bypass -> headers, metrics, logs)
//! admin ──> metrics (Prometheus registry), cache purges, health, readiness
//! config: flags + environment + TOML -> one validated Config, read by all of the above
//! ```
//!
//! - [`server`] accepts connections on the proxy and admin listeners and drains them on
//!   shutdown; [`run`] is the entry point that the binary and the tests call.
//! - [`proxy`] is the service: it classifies a request with [`route`], answers Image.Get from
//!   [`cache`] for callers that [`auth`] says may see the entry, joins or leads a flight in
//!   [`coalesce`] on a miss, and forwards everything else through [`upstream`]. With
//!   `--redis`, the leader of a flight first asks the [`fleet`] tier: another instance may
//!   have the image already, or be fetching it under a lease this instance then waits on.
//! - [`outcome`] is the one value per request that the `X-Cache`/`Cache-Status` headers,
//!   the [`metrics`] and the logs are made from; [`body`] is the response body type.
//! - [`admin`] serves `/metrics`, `/healthz`, `/readyz` and the purge endpoints.

pub mod admin;
pub mod admission;
pub mod auth;
pub mod body;
pub mod cache;
pub mod coalesce;
pub mod config;
pub mod descriptors;
pub mod fleet;
pub mod logging;
pub mod metrics;
pub mod outcome;
pub mod proxy;
pub mod route;
pub mod server;
pub mod upload;
pub mod upstream;

pub use config::Config;
pub use server::{run, shutdown_signal};
