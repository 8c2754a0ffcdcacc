//! baremetal-image-cache: a read-through caching proxy for the Yandex Cloud BareMetal API.
//!
//! It serves Image.Get (`GET /baremetal/v1alpha/images/{imageId}`) from an in-memory TTL
//! cache, shares one upstream fetch among concurrent misses, and passes every other request
//! through untouched.
//!
//! # How a request flows
//!
//! ```text
//! server ─> rest ─────────────> flow ─────────────────────────────> upstream
//! (listeners,  (admission,        (the Image.Get flow, protocol-      (hyper-util client,
//!  caps,        route, render      agnostic: auth -> cache ->          deadlines, error
//!  drain)       X-Cache; pass-     coalesce -> fleet -> upstream;      kinds, slots)
//!               through)           a Verdict in, Served + Outcome out)
//! admin ─> flow (purges, gauges) and metrics (the scrape)
//! config: one table of settings -> one validated Config, read by all of the above
//! ```
//!
//! A request arrives at [`server`], which holds the listeners, their connection caps and the
//! drain on shutdown. The [`rest`] front-end admits it ([`http::admission`]), classifies its
//! raw target ([`route`], a pure function) and either hands an Image.Get to the [`flow`] or
//! passes the request through. The flow answers a hit from the [`cache`] for a caller that
//! [`auth`] says may read it; on a miss it joins or leads a flight ([`coalesce`]) whose fetch
//! asks the [`fleet`] tier, then the [`upstream`]. The front-end judges each upstream answer
//! (a [`flow::Verdict`]: READY, not ready, gone, refused, failing ...) using [`image`], and
//! renders what the flow serves in its protocol. One [`outcome::Outcome`] per Image.Get
//! becomes the `X-Cache`/`Cache-Status` headers, the [`metrics`] and the log event.
//!
//! Dependencies point one way, down this list: `server`, `admin` > `rest` > `flow` >
//! `fleet` > `cache`, `coalesce`, `upstream` > `http` > `metrics` > `outcome`, `route`,
//! `image`, `auth`, `config`, `error`, `descriptors`, `logging`. No two modules import each
//! other. The upstream simulator the tests, examples and benchmarks run against is a crate
//! of its own (`crates/baremetal-api-sim`); nothing here uses it.

mod admin;
mod auth;
mod cache;
mod coalesce;
pub mod config;
mod descriptors;
mod error;
mod fleet;
mod flow;
mod grpc;
mod http;
mod image;
pub mod logging;
mod metrics;
mod outcome;
mod rest;
pub mod route;
mod server;
mod upstream;

pub use config::{AuthMode, Config, ConfigError, RedisConfig, Secret, UpstreamUrl};
pub use error::BoxError;
pub use server::{run, shutdown_signal};
