//! HTTP pieces shared by the listeners, the front-ends and the upstream client, none of
//! which knows about the cache: which headers travel where, the response body type, the
//! API's error shape, request bodies on their way upstream, and which requests are taken.

pub mod admission;
pub mod body;
pub mod errors;
pub mod headers;
pub mod upload;

pub use body::ProxyBody;
pub use errors::api_error;
