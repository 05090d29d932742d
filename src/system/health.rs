//! Readiness: can this device take work? Each check is reported by name so an operator
//! sees which one failed.

use std::path::Path;

use serde::Serialize;

use crate::store::Store;

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub checks: Vec<Check>,
}

/// Runs every check. Blocking: it commits to the store and calls `statvfs`.
#[must_use]
pub fn check(store: &Store, data_dir: &Path, min_free_disk: u64, draining: bool) -> Readiness {
    let mut checks = Vec::with_capacity(3);
    checks.push(match store.probe_write() {
        Ok(()) => Check {
            name: "store",
            ok: true,
            detail: "writable".into(),
        },
        Err(e) => Check {
            name: "store",
            ok: false,
            detail: e.to_string(),
        },
    });
    checks.push(match super::disk_space(data_dir) {
        Ok(space) if space.available >= min_free_disk => Check {
            name: "disk",
            ok: true,
            detail: format!("{} bytes free, threshold {min_free_disk}", space.available),
        },
        Ok(space) => Check {
            name: "disk",
            ok: false,
            detail: format!(
                "{} bytes free, below the threshold of {min_free_disk} (health.min_free_disk)",
                space.available
            ),
        },
        Err(e) => Check {
            name: "disk",
            ok: false,
            detail: format!("statvfs failed: {e}"),
        },
    });
    checks.push(Check {
        name: "accepting",
        ok: !draining,
        detail: if draining {
            "shutting down".into()
        } else {
            "accepting requests".into()
        },
    });
    Readiness {
        ready: checks.iter().all(|c| c.ok),
        checks,
    }
}
