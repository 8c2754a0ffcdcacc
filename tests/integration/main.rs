//! The proxy's integration tests, one module per concern, built as one test binary (one
//! link instead of one per file). Most start the real proxy (`baremetal_image_cache::run`) on
//! `127.0.0.1:0` in front of the upstream simulator (`baremetal_api_sim`); `lifecycle` and
//! `operations` run the binary as an operator does (configuration errors, SIGTERM,
//! `--check-config`, SIGHUP reloads, the admin token); `fleet` and `grpc_fleet` add real `redis-server`
//! processes; the `grpc*` modules are the gRPC twins of the REST ones, and `python_sdk` runs
//! the official Python SDK against the proxy. What the modules share is in `support`.
// These tests run real sockets and measure wall time; tokio's paused clock is for the
// unit tests of the library, where no socket is involved (see .clippy.toml).
#![allow(clippy::disallowed_types)]

mod support;

mod authorization;
mod cache;
mod coalescing;
mod faults;
mod fleet;
mod fleet_subscription;
mod grpc;
mod grpc_faults;
mod grpc_fleet;
mod lifecycle;
mod metrics;
mod operations;
mod passthrough;
mod python_sdk;
mod request_properties;
mod router_properties;
