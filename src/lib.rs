//! baremetal-image-cache: a read-through caching proxy for the Yandex Cloud BareMetal API.
//!
//! It serves Image.Get (`GET /baremetal/v1alpha/images/{imageId}` over REST, and gRPC
//! `ImageService.Get`) from an in-memory TTL cache, shares one upstream fetch among concurrent
//! misses, and passes every other request through untouched.
//!
//! # How a request flows
//!
//! ```text
//! server ─┬> rest ─┐            flow ─────────────────────────────> upstream
//! (listeners,      ├> (the Image.Get flow, protocol-agnostic:        (hyper-util client,
//!  caps, drain,    │   auth -> cache -> coalesce -> fleet ->          deadlines, error
//!  reloads)  └> grpc ┘   upstream; a Verdict in, Served + Outcome out) kinds, slots)
//! (front-ends: admit, route, render in their protocol; pass the rest through)
//! admin ─> flow (purges, gauges) and metrics (the scrape); reload ─> everything tunable
//! config: one table of settings -> one validated Config, read by all of the above
//! ```
//!
//! A request arrives at [`server`], which holds the listeners, their connection caps, the
//! header-read timeout and the drain on shutdown, and sends it by its content type to one of
//! two front-ends: [`rest`] (JSON over HTTP/1.1 or HTTP/2) or [`grpc`] (`application/grpc`). A
//! front-end admits it ([`http::admission`], [`http::limits`]), classifies it ([`route`], a
//! pure function, or the gRPC path and message) and either hands an Image.Get to the [`flow`]
//! or passes the request through. The flow answers a hit from the [`cache`] (a table of recent
//! lookups in front of moka) for a caller that [`auth`] says may read it; on a miss it joins or
//! leads a flight ([`coalesce`]) whose fetch asks the [`fleet`] tier, then the [`upstream`].
//! The front-end judges each upstream answer (a [`flow::Verdict`]: READY, not ready, gone,
//! refused, failing ...) using [`image`], and renders what the flow serves in its protocol. One
//! [`outcome::Outcome`] per Image.Get becomes the `X-Cache`/`Cache-Status` headers, the
//! [`metrics`] and the log event.
//!
//! The [`admin`] listener serves the scrape, the probes and purges (guarded by a token or
//! loopback). On SIGHUP the binary loads the configuration again and [`reload`] hands the
//! settings that may change while running to the parts that read them, each held as a
//! [`tunable`] value; the others wait for a restart.
//!
//! Dependencies point one way, down this list: `server`; `reload`; `admin`, `rest`, `grpc`;
//! `flow`; `fleet`; `cache`, `coalesce`, `upstream`; `http`; `metrics`; `outcome`, `route`,
//! `image`, `auth`, `config`, `tunable`, `error`, `descriptors`, `logging`. No two modules
//! import each other. The upstream simulator the tests, examples and benchmarks run
//! against is a crate of its own (`crates/baremetal-api-sim`); nothing here uses it.

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
#[cfg(unix)]
mod notify;
mod outcome;
mod reload;
mod rest;
pub mod route;
mod server;
mod tunable;
mod upstream;

pub use config::{AuthMode, Config, ConfigError, RedisConfig, Secret, UpstreamUrl};
pub use error::BoxError;
#[cfg(unix)]
pub use server::reload_signal;
pub use server::{run, run_with_reloads, shutdown_signal, Reload};
