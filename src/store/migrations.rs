//! Ordered schema migrations. Each step takes a store at version `n - 1` to `n` inside
//! the single write transaction that `Store::open` commits, so a failed upgrade leaves
//! the store as it was.

use redb::{ReadableTable, WriteTransaction};

use super::StoreError;
use super::schema::{DeviceRecord, META, encode, meta_key};

type Step = fn(&WriteTransaction) -> Result<(), StoreError>;

/// `MIGRATIONS[i]` upgrades version `i + 1` to `i + 2`.
pub(super) const MIGRATIONS: &[Step] = &[v1_to_v2];

/// Schema 2 turns the bare creation time into the device identity record.
fn v1_to_v2(txn: &WriteTransaction) -> Result<(), StoreError> {
    let mut meta = txn.open_table(META)?;
    let created_at_unix = match meta.remove(meta_key::V1_CREATED_AT)? {
        Some(raw) => {
            let bytes: [u8; 8] = raw.value().try_into().map_err(|_| {
                StoreError::Corrupt("meta.created_at is not 8 bytes".into())
            })?;
            u64::from_le_bytes(bytes)
        }
        None => super::unix_now(),
    };
    if meta.get(meta_key::DEVICE)?.is_none() {
        let record = DeviceRecord::V1 { id: super::random_id()?, created_at_unix };
        meta.insert(meta_key::DEVICE, encode(&record).as_slice())?;
    }
    Ok(())
}
