//! Ordered schema migrations. Each step takes a store at version `n - 1` to `n` inside
//! the single write transaction that `Store::open` commits, so a failed upgrade leaves
//! the store as it was.

use redb::{ReadableTable, WriteTransaction};

use super::schema::{
    API_KEYS, AUDIT, DEPLOYMENTS, DeviceRecord, KEY_USAGE, META, MODEL_VERSIONS, MODELS, SCHEDULES,
    SESSIONS, TASK_KEYS, TASKS, TASKS_BY_STATUS, USERNAMES, USERS, encode, meta_key,
};
use super::{StoreError, decode};

type Step = fn(&WriteTransaction) -> Result<(), StoreError>;

/// `MIGRATIONS[i]` upgrades version `i + 1` to `i + 2`.
pub(super) const MIGRATIONS: &[Step] = &[v1_to_v2, v2_to_v3, v3_to_v4, v4_to_v5, v5_to_v6];

/// Schema 2 turns the bare creation time into the device identity record.
fn v1_to_v2(txn: &WriteTransaction) -> Result<(), StoreError> {
    let mut meta = txn.open_table(META)?;
    let created_at_unix = match meta.remove(meta_key::V1_CREATED_AT)? {
        Some(raw) => {
            let bytes: [u8; 8] = raw
                .value()
                .try_into()
                .map_err(|_| StoreError::Corrupt("meta.created_at is not 8 bytes".into()))?;
            u64::from_le_bytes(bytes)
        }
        None => super::unix_now(),
    };
    if meta.get(meta_key::DEVICE)?.is_none() {
        let record = DeviceRecord::V1 {
            id: super::random_id()?,
            created_at_unix,
        };
        meta.insert(meta_key::DEVICE, encode(&record).as_slice())?;
    }
    Ok(())
}

/// Schema 3 adds identity and access: its tables and the server secret for key MACs.
fn v2_to_v3(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(USERS)?;
    txn.open_table(USERNAMES)?;
    txn.open_table(SESSIONS)?;
    txn.open_table(API_KEYS)?;
    txn.open_table(KEY_USAGE)?;
    txn.open_table(AUDIT)?;
    let mut meta = txn.open_table(META)?;
    if meta.get(meta_key::SERVER_SECRET)?.is_none() {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| StoreError::Io(format!("no randomness: {e}")))?;
        meta.insert(meta_key::SERVER_SECRET, secret.as_slice())?;
    }
    if meta.get(meta_key::NEXT_USER_ID)?.is_none() {
        meta.insert(meta_key::NEXT_USER_ID, 1u64.to_le_bytes().as_slice())?;
    }
    Ok(())
}

/// Schema 4 adds the model registry and deployments.
fn v3_to_v4(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(MODELS)?;
    txn.open_table(MODEL_VERSIONS)?;
    txn.open_table(DEPLOYMENTS)?;
    Ok(())
}

/// Schema 5 adds the task scheduler: tasks, their indexes, schedules and the id counters.
fn v4_to_v5(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(TASKS)?;
    txn.open_table(TASKS_BY_STATUS)?;
    txn.open_table(TASK_KEYS)?;
    txn.open_table(SCHEDULES)?;
    let mut meta = txn.open_table(META)?;
    for key in [meta_key::NEXT_TASK_ID, meta_key::NEXT_SCHEDULE_ID] {
        if meta.get(key)?.is_none() {
            meta.insert(key, 1u64.to_le_bytes().as_slice())?;
        }
    }
    Ok(())
}

/// Schema 6 rewrites every deployment as [`DeploymentRecord::V2`] (precision f32), so a
/// cairn that predates precisions refuses the store rather than misreading it.
///
/// [`DeploymentRecord::V2`]: super::schema::DeploymentRecord::V2
fn v5_to_v6(txn: &WriteTransaction) -> Result<(), StoreError> {
    use super::schema::DeploymentRecord;
    let mut deployments = txn.open_table(DEPLOYMENTS)?;
    let mut upgraded = Vec::new();
    for entry in deployments.iter()? {
        let (name, raw) = entry?;
        let record: DeploymentRecord = decode(raw.value(), "deployments")?;
        if matches!(record, DeploymentRecord::V1 { .. }) {
            upgraded.push((
                name.value().to_owned(),
                DeploymentRecord::from(record.latest()),
            ));
        }
    }
    for (name, record) in upgraded {
        deployments.insert(name.as_str(), encode(&record).as_slice())?;
    }
    Ok(())
}
