//! HTTP pieces shared by the listeners, the front-ends and the upstream client, none of
//! which knows about the cache: which headers travel where, the response body type, the
//! API's error shape, request bodies on their way upstream, which requests are taken and the
//! limits on what a client sends.

pub mod admission;
pub mod body;
pub mod errors;
pub mod handling;
pub mod headers;
pub mod limits;
pub mod upload;

pub use body::ProxyBody;
pub use errors::api_error;
