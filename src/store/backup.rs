//! Consistent copies of the store: every table read from one read transaction (a
//! snapshot) and written into a fresh redb file, which is therefore also compact.

use std::collections::HashSet;
use std::path::Path;

use redb::{
    Database, Durability, Key, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition,
    Value,
};

use super::schema::{
    API_KEYS, AUDIT, DEPLOYMENTS, KEY_USAGE, META, MODEL_VERSIONS, MODELS, SCHEDULES, SESSIONS,
    TASK_KEYS, TASKS, TASKS_BY_STATUS, USERNAMES, USERS, VersionRecord,
};
use super::{Store, StoreError, decode};

/// What a backup of the store holds.
#[derive(Debug, Clone, Default)]
pub struct BackupStats {
    /// Table name → rows copied.
    pub tables: Vec<(&'static str, u64)>,
    /// SHA-256 of every model blob the snapshot refers to.
    pub blobs: HashSet<[u8; 32]>,
}

/// The names of every table a backup copies. A test compares them with the tables of a
/// new store, so a table added without a line in [`copy_all`] fails the build's tests.
pub(crate) const BACKED_UP: &[&str] = &[
    "meta",
    "users",
    "usernames",
    "sessions",
    "api_keys",
    "key_usage",
    "audit",
    "models",
    "model_versions",
    "deployments",
    "tasks",
    "tasks_by_status",
    "task_keys",
    "schedules",
];

fn copy<K: Key + 'static, V: Value + 'static>(
    from: &ReadTransaction,
    to: &redb::WriteTransaction,
    table: TableDefinition<'static, K, V>,
    stats: &mut BackupStats,
) -> Result<(), StoreError> {
    let source = from.open_table(table)?;
    let mut target = to.open_table(table)?;
    let mut rows = 0u64;
    for entry in source.iter()? {
        let (key, value) = entry?;
        target.insert(key.value(), value.value())?;
        rows += 1;
    }
    stats.tables.push((table.name_static(), rows));
    Ok(())
}

trait StaticName {
    fn name_static(&self) -> &'static str;
}

impl<K: Key + 'static, V: Value + 'static> StaticName for TableDefinition<'static, K, V> {
    fn name_static(&self) -> &'static str {
        BACKED_UP
            .iter()
            .find(|name| **name == redb::TableHandle::name(self))
            .copied()
            .unwrap_or("unknown")
    }
}

fn copy_all(
    from: &ReadTransaction,
    to: &redb::WriteTransaction,
    stats: &mut BackupStats,
) -> Result<(), StoreError> {
    copy(from, to, META, stats)?;
    copy(from, to, USERS, stats)?;
    copy(from, to, USERNAMES, stats)?;
    copy(from, to, SESSIONS, stats)?;
    copy(from, to, API_KEYS, stats)?;
    copy(from, to, KEY_USAGE, stats)?;
    copy(from, to, AUDIT, stats)?;
    copy(from, to, MODELS, stats)?;
    copy(from, to, MODEL_VERSIONS, stats)?;
    copy(from, to, DEPLOYMENTS, stats)?;
    copy(from, to, TASKS, stats)?;
    copy(from, to, TASKS_BY_STATUS, stats)?;
    copy(from, to, TASK_KEYS, stats)?;
    copy(from, to, SCHEDULES, stats)?;
    Ok(())
}

impl Store {
    /// Writes a consistent, compact copy of the whole store to `dest` (a new file), and
    /// says which model blobs that snapshot refers to.
    ///
    /// # Errors
    /// `dest` exists or cannot be written; I/O failure.
    pub fn backup_to(&self, dest: &Path) -> Result<BackupStats, StoreError> {
        if dest.exists() {
            return Err(StoreError::Conflict(format!(
                "backup file {}",
                dest.display()
            )));
        }
        let snapshot = self.db.begin_read()?;
        let target = Database::create(dest)?;
        let mut txn = target.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        let mut stats = BackupStats::default();
        copy_all(&snapshot, &txn, &mut stats)?;
        txn.commit()?;
        let versions = snapshot.open_table(MODEL_VERSIONS)?;
        for entry in versions.iter()? {
            let (_, raw) = entry?;
            let VersionRecord::V1 { sha256, .. } = decode(raw.value(), "model_versions")?;
            stats.blobs.insert(sha256);
        }
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use redb::TableHandle;

    use super::*;
    use crate::store::STORE_FILE;

    #[test]
    fn a_backup_copies_every_table_and_opens_as_a_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join(STORE_FILE)).unwrap();
        let mut names: Vec<String> = store
            .db
            .begin_read()
            .unwrap()
            .list_tables()
            .unwrap()
            .map(|t| t.name().to_owned())
            .collect();
        names.sort();
        let mut expected: Vec<String> = BACKED_UP.iter().map(|s| (*s).to_owned()).collect();
        expected.sort();
        assert_eq!(names, expected, "a table is missing from the backup");
        let dest = dir.path().join("copy.redb");
        let stats = store.backup_to(&dest).unwrap();
        assert_eq!(stats.tables.len(), BACKED_UP.len());
        assert!(stats.tables.iter().all(|(name, _)| *name != "unknown"));
        assert!(store.backup_to(&dest).is_err(), "never overwrites");
        let copy = Store::open(&dest).unwrap();
        assert_eq!(copy.device().unwrap(), store.device().unwrap());
    }
}
