//! baremetal-image-cache: a read-through caching proxy for the Yandex Cloud BareMetal API.

pub mod sim;
