//! The operating system seen from cairn: the data-dir lock, systemd notifications,
//! signals, disk space, process statistics and the allocator's settings. Everything here
//! goes through nix (or sd-notify), never through raw `libc` calls, except `mallopt`
//! (`allocator.rs`), which nix does not wrap.

pub mod allocator;
pub mod health;
pub mod lock;
pub mod notify;
pub mod proc_stats;
pub mod signals;

use std::path::Path;

/// Free and total bytes of the file system holding `path`.
///
/// # Errors
/// `statvfs` failed (the path is gone, permission denied).
pub fn disk_space(path: &Path) -> nix::Result<DiskSpace> {
    let stat = nix::sys::statvfs::statvfs(path)?;
    // The field types are narrower than u64 on some 32-bit targets.
    #[allow(clippy::useless_conversion, reason = "u32 on some 32-bit targets")]
    let fragment = u64::from(stat.fragment_size());
    #[allow(clippy::useless_conversion, reason = "u32 on some 32-bit targets")]
    Ok(DiskSpace {
        available: u64::from(stat.blocks_available()).saturating_mul(fragment),
        total: u64::from(stat.blocks()).saturating_mul(fragment),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskSpace {
    /// Bytes an unprivileged process may still write.
    pub available: u64,
    pub total: u64,
}
