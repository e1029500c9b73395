//! The process's open-file limit. Every tailnet connection is a file descriptor, and many container runtimes
//! start processes with a soft limit of 1024 under a much higher hard one; Go programs (tailscaled among them)
//! raise their soft limit to the hard one at start, and so does tka-server, so that `server.maxConnections`
//! rather than the soft limit decides how many connections it holds.

/// Descriptors the server needs besides its tailnet connections: the apiserver, tailscaled's socket, the
/// health port, logs, the runtime.
const RESERVE: u64 = 256;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the limit now in force (`None` if it cannot
/// be read). Warns when it leaves too few descriptors for `max_connections`.
pub fn raise(max_connections: u64) -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read or write the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim = raised;
        }
    }
    let now = lim.rlim_cur;
    if now < max_connections + RESERVE {
        tracing::warn!(
            open_files = now,
            needed = max_connections + RESERVE,
            "the open-file limit is below server.maxConnections plus a reserve: connections beyond it fail \
             to be accepted; raise the limit (ulimit -n, LimitNOFILE) or lower server.maxConnections"
        );
    }
    Some(now)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
        let low = libc::rlimit {
            rlim_cur: lim.rlim_max.min(512),
            rlim_max: lim.rlim_max,
        };
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &low) }, 0);
        assert_eq!(super::raise(0), Some(lim.rlim_max));
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
        assert_eq!(lim.rlim_cur, lim.rlim_max);
    }
}
