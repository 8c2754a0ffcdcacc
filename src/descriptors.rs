//! The process's file descriptor budget. Every client connection and every upstream
//! exchange holds a descriptor; a proxy that runs out cannot even accept a connection to
//! refuse it, so its clients hang instead of getting the documented 503. At start-up the
//! soft limit is raised as far as the hard limit allows, and the connection caps are sized
//! to fit under it, with a warning that says so.

/// Descriptors kept for everything but connections: stdio, the two listeners, the runtime's
/// epoll and wakers, Redis connections, files read at start-up.
const RESERVED: u64 = 64;

/// Most admin connections at once (metrics scrapes and probes need a handful).
pub const ADMIN_MAX_CONNECTIONS: usize = 32;

/// Most refusals (a 503 written to a connection past the cap) under way at once; past it a
/// connection is closed without one.
pub const MAX_REFUSALS: usize = 32;

/// The caps the process can hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    pub max_connections: usize,
    pub max_upstream_requests: usize,
}

/// Raises the soft descriptor limit towards what the configured caps need (never past the
/// hard limit) and returns the caps that fit under the limit it got.
pub fn plan(max_connections: usize, max_upstream_requests: usize) -> Budget {
    let fixed = RESERVED + (ADMIN_MAX_CONNECTIONS + MAX_REFUSALS) as u64;
    let wanted = fixed + (max_connections + max_upstream_requests) as u64;
    let limit = match rlimit::increase_nofile_limit(wanted) {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the file descriptor limit; keeping the configured caps");
            return Budget {
                max_connections,
                max_upstream_requests,
            };
        }
    };
    let budget = fit(limit, max_connections, max_upstream_requests);
    if budget.max_connections < max_connections
        || budget.max_upstream_requests < max_upstream_requests
    {
        tracing::warn!(
            descriptor_limit = limit,
            max_connections = budget.max_connections,
            max_upstream_requests = budget.max_upstream_requests,
            "the file descriptor limit holds fewer connections than configured \
             (max-connections {max_connections}, max-upstream-requests \
             {max_upstream_requests}); using the smaller caps. Raise the limit \
             (ulimit -n, systemd LimitNOFILE=) to {wanted} to keep them"
        );
    }
    budget
}

/// The caps that fit under `limit` descriptors: the configured ones if they do; else the
/// upstream gets at most a quarter of what is left, and client connections the rest.
fn fit(limit: u64, max_connections: usize, max_upstream_requests: usize) -> Budget {
    let fixed = RESERVED + (ADMIN_MAX_CONNECTIONS + MAX_REFUSALS) as u64;
    let room = usize::try_from(limit.saturating_sub(fixed)).unwrap_or(usize::MAX);
    if max_connections.saturating_add(max_upstream_requests) <= room {
        return Budget {
            max_connections,
            max_upstream_requests,
        };
    }
    let upstream = max_upstream_requests.min(room / 4).max(1);
    Budget {
        max_connections: max_connections.min(room.saturating_sub(upstream)).max(1),
        max_upstream_requests: upstream,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_that_fit_are_kept() {
        assert_eq!(
            fit(1_048_576, 10_000, 512),
            Budget {
                max_connections: 10_000,
                max_upstream_requests: 512
            }
        );
    }

    #[test]
    fn caps_that_do_not_fit_are_shrunk_below_the_limit() {
        let budget = fit(256, 10_000, 512);
        assert_eq!(budget.max_upstream_requests, 32);
        assert_eq!(budget.max_connections, 96);
        let used = RESERVED as usize
            + ADMIN_MAX_CONNECTIONS
            + MAX_REFUSALS
            + budget.max_connections
            + budget.max_upstream_requests;
        assert!(used <= 256);
        // A limit too small for anything still leaves one of each.
        assert_eq!(
            fit(10, 10_000, 512),
            Budget {
                max_connections: 1,
                max_upstream_requests: 1
            }
        );
    }
}
