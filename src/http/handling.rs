//! What a front-end returns for a request: its response, made at once, or the work still to
//! do. A hit answered from the table of recent lookups is made at once, so the future hyper
//! holds (and moves: into a task per HTTP/2 stream, into its own box per HTTP/1 request) is
//! the response itself, not a state machine with room for every path a request might take.

use std::future::{ready, Future, Ready};
use std::pin::Pin;

use futures_util::future::Either;
use http::Response;

use super::body::ProxyBody;

/// A response now, or one to come.
pub type Handling = Either<Ready<Response<ProxyBody>>, Later>;

/// A response to come.
pub type Later = Pin<Box<dyn Future<Output = Response<ProxyBody>> + Send>>;

/// A response made at once.
pub fn at_once(response: Response<ProxyBody>) -> Handling {
    Either::Left(ready(response))
}

/// A response that takes waiting for.
pub fn later(work: impl Future<Output = Response<ProxyBody>> + Send + 'static) -> Handling {
    Either::Right(Box::pin(work))
}
