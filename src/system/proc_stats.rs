//! Statistics of this process, read at scrape time.

use nix::sys::resource::{UsageWho, getrusage};

/// A snapshot for the `process_*` metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcStats {
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub cpu_seconds: f64,
    pub open_fds: u64,
    pub max_fds: u64,
}

/// Reads `/proc/self/statm`, `getrusage`, `/proc/self/fd` and `RLIMIT_NOFILE`.
#[must_use]
pub fn read() -> ProcStats {
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|p| u64::try_from(p).ok())
        .unwrap_or(4096);
    let mut stats = ProcStats::default();
    if let Ok(statm) = std::fs::read_to_string("/proc/self/statm") {
        let mut fields = statm
            .split_ascii_whitespace()
            .map(|f| f.parse::<u64>().unwrap_or(0));
        stats.virtual_bytes = fields.next().unwrap_or(0) * page;
        stats.resident_bytes = fields.next().unwrap_or(0) * page;
    }
    if let Ok(usage) = getrusage(UsageWho::RUSAGE_SELF) {
        let secs = |tv: nix::sys::time::TimeVal| {
            #[expect(clippy::cast_precision_loss, reason = "seconds of CPU fit an f64")]
            let s = tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
            s
        };
        stats.cpu_seconds = secs(usage.user_time()) + secs(usage.system_time());
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        // The read_dir handle itself is one of the entries.
        stats.open_fds = (dir.count() as u64).saturating_sub(1);
    }
    if let Ok((soft, _)) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
    {
        stats.max_fds = soft;
    }
    stats
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_real_numbers() {
        let stats = super::read();
        assert!(stats.resident_bytes > 0);
        assert!(stats.open_fds >= 3);
        assert!(stats.max_fds >= stats.open_fds);
    }
}
