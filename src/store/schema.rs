//! The whole redb schema of cairn: every table, every stored record, the schema version.
//!
//! Architecture invariant: stored records are postcard-encoded enums whose variant is the
//! record's version (`V1`, `V2`, ...). A new variant is added, old ones are never changed,
//! so a record written by an older cairn always decodes. A change to a table's layout bumps
//! [`SCHEMA_VERSION`] and adds a step to `migrations.rs`.

use redb::TableDefinition;
use serde::{Deserialize, Serialize};

/// The schema this build writes. A store with a higher version is refused: cairn never
/// downgrades a store.
///
/// History:
/// - 1: `meta` only (`schema_version`, `created_at` as u64 little-endian unix seconds).
/// - 2: the device identity record (`meta["device"]`) replaces `created_at`.
pub const SCHEMA_VERSION: u32 = 2;

/// Small singleton values, by name.
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// Keys of [`META`].
pub mod meta_key {
    /// `u32` little-endian.
    pub const SCHEMA_VERSION: &str = "schema_version";
    /// A [`super::DeviceRecord`].
    pub const DEVICE: &str = "device";
    /// Written by the readiness probe to prove the store takes writes.
    pub const READY_PROBE: &str = "ready_probe";
    /// Schema 1 only: creation time, u64 little-endian unix seconds.
    pub const V1_CREATED_AT: &str = "created_at";
}

/// The identity of this device, created on first start. Fleet tools key on `id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceRecord {
    V1 { id: [u8; 16], created_at_unix: u64 },
}

/// Encodes a record for storage.
///
/// # Panics
/// Never for cairn's records: postcard only fails on unsupported serde features.
#[must_use]
pub fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    postcard::to_allocvec(record).expect("records are postcard-encodable")
}
