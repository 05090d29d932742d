//! The embedded store: one redb file in the data dir.
//!
//! Architecture invariant: this module is the only code that opens redb tables. Domain
//! modules call typed methods here; nothing above sees a table or a postcard byte.
//! Every method is blocking (redb does file I/O and fsync): async callers go through
//! `spawn_blocking`.

mod auth;
mod backup;
mod migrations;
mod recovery;
mod registry;
pub mod schema;
mod tasks;

pub use auth::{AuditQuery, StoredKey, StoredUser};
pub use backup::BackupStats;
pub use tasks::{LoadedTasks, TaskFilter, TaskWrite};

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{Durability, ReadableDatabase, ReadableTable};

use self::schema::{DeviceRecord, META, SCHEMA_VERSION, meta_key};

/// The file name of the store inside the data dir.
pub const STORE_FILE: &str = "cairn.redb";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error(
        "the store was written by a newer cairn (schema {found}, this build knows up to {supported}); \
         run that version or restore a backup: cairn never downgrades a store"
    )]
    NewerSchema { found: u32, supported: u32 },
    #[error("the store file is damaged: {0}")]
    Corrupt(String),
    #[error("the store is open in another process")]
    AlreadyOpen,
    #[error("store I/O failed: {0}")]
    Io(String),
    #[error("{0} already exists")]
    Conflict(String),
    #[error("{0} not found")]
    NotFound(String),
    /// A change refused because something still uses the record (the message says what).
    #[error("{0}")]
    InUse(String),
}

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        match e {
            redb::Error::DatabaseAlreadyOpen => Self::AlreadyOpen,
            redb::Error::Corrupted(msg) => Self::Corrupt(msg),
            redb::Error::UpgradeRequired(v) => {
                Self::Corrupt(format!("redb file format {v} needs a manual upgrade"))
            }
            redb::Error::Io(io) if io.raw_os_error() == Some(nix::errno::Errno::ENOSPC as i32) => Self::Io(
                "the disk is full: the store cannot write (free space on the data dir's file \
                 system; cairn recovers by itself once there is room)"
                    .into(),
            ),
            redb::Error::PreviousIo => Self::Io(
                "the store is recovering from a failed write (disk full or I/O error); retry shortly"
                    .into(),
            ),
            other => Self::Io(other.to_string()),
        }
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { redb::Error::from(e).into() }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

/// The device identity, as domain code sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceIdentity {
    /// 32 lower-case hex digits.
    pub id: String,
    pub created_at_unix: u64,
}

/// The open store. Cheap to share behind an `Arc`; redb serialises writers itself. The
/// database reopens itself after a failed write ([`recovery`]).
pub struct Store {
    pub(super) db: recovery::Db,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) the store at `path` and brings its schema up to
    /// [`SCHEMA_VERSION`] in one write transaction.
    ///
    /// # Errors
    /// A store from a newer cairn, a damaged file, or I/O failure.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = recovery::Db::open(path)?;
        let store = Self {
            db,
            path: path.to_path_buf(),
        };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        let found = {
            let mut meta = txn.open_table(META)?;
            let found = match meta.get(meta_key::SCHEMA_VERSION)? {
                Some(raw) => decode_version(raw.value())?,
                None => 0,
            };
            if found == 0 {
                // A new store: write version 1, then migrate it like any other.
                meta.insert(meta_key::SCHEMA_VERSION, 1u32.to_le_bytes().as_slice())?;
                meta.insert(meta_key::V1_CREATED_AT, unix_now().to_le_bytes().as_slice())?;
            }
            found.max(1)
        };
        if found > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema {
                found,
                supported: SCHEMA_VERSION,
            });
        }
        if found == SCHEMA_VERSION {
            txn.abort()?;
            return Ok(());
        }
        for (index, step) in migrations::MIGRATIONS
            .iter()
            .enumerate()
            .skip(found as usize - 1)
        {
            let to = u32::try_from(index).expect("few migrations") + 2;
            tracing::info!(from = to - 1, to, "migrating store schema");
            step(&txn)?;
        }
        txn.open_table(META)?.insert(
            meta_key::SCHEMA_VERSION,
            SCHEMA_VERSION.to_le_bytes().as_slice(),
        )?;
        txn.commit()?;
        Ok(())
    }

    /// The schema version recorded in the store.
    ///
    /// # Errors
    /// I/O failure or a damaged file.
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        let raw = meta
            .get(meta_key::SCHEMA_VERSION)?
            .ok_or_else(|| StoreError::Corrupt("meta.schema_version is missing".into()))?;
        decode_version(raw.value())
    }

    /// This device's identity, created at first start.
    ///
    /// # Errors
    /// I/O failure or a damaged record.
    pub fn device(&self) -> Result<DeviceIdentity, StoreError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        let raw = meta
            .get(meta_key::DEVICE)?
            .ok_or_else(|| StoreError::Corrupt("meta.device is missing".into()))?;
        let record: DeviceRecord = decode(raw.value(), "meta.device")?;
        let DeviceRecord::V1 {
            id,
            created_at_unix,
        } = record;
        Ok(DeviceIdentity {
            id: hex(&id),
            created_at_unix,
        })
    }

    /// Proves the store takes a durable write (for readiness).
    ///
    /// # Errors
    /// The write failed: disk full, read-only file system, I/O error.
    pub fn probe_write(&self) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        txn.open_table(META)?
            .insert(meta_key::READY_PROBE, unix_now().to_le_bytes().as_slice())?;
        txn.commit()?;
        Ok(())
    }

    /// Makes every earlier commit durable (at shutdown).
    ///
    /// # Errors
    /// I/O failure.
    pub fn flush(&self) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        txn.commit()?;
        Ok(())
    }

    /// Compacts the store file in place: live records move down, free pages go back to
    /// the file system. Every other transaction waits while it runs (small stores: a few
    /// milliseconds per megabyte). Returns the file's size before and after.
    ///
    /// # Errors
    /// Read transactions stayed open longer than `wait` (`InUse`: try again), or I/O.
    pub fn compact(&self, wait: std::time::Duration) -> Result<(u64, u64), StoreError> {
        let before = self.file_size();
        match self.db.compact(wait) {
            Ok(_) => Ok((before, self.file_size())),
            Err(redb::Error::TransactionInProgress) => Err(StoreError::InUse(format!(
                "the store stayed busy with open reads for {} ms; compaction needs it alone, try again later",
                wait.as_millis()
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// The size of the store file in bytes.
    #[must_use]
    pub fn file_size(&self) -> u64 {
        std::fs::metadata(&self.path).map_or(0, |m| m.len())
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn decode_version(raw: &[u8]) -> Result<u32, StoreError> {
    let bytes: [u8; 4] = raw
        .try_into()
        .map_err(|_| StoreError::Corrupt("meta.schema_version is not 4 bytes".into()))?;
    Ok(u32::from_le_bytes(bytes))
}

fn decode<T: serde::de::DeserializeOwned>(raw: &[u8], what: &str) -> Result<T, StoreError> {
    postcard::from_bytes(raw).map_err(|e| {
        StoreError::Corrupt(format!(
            "{what} does not decode ({e}); was it written by a newer cairn?"
        ))
    })
}

/// Seconds since the Unix epoch.
#[must_use]
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(crate) fn random_id() -> Result<[u8; 16], StoreError> {
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).map_err(|e| StoreError::Io(format!("no randomness: {e}")))?;
    Ok(id)
}

/// Lower-case hex of bytes (ids, digests).
#[must_use]
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Writers of stores at old schema versions, for the migration tests.
#[doc(hidden)]
pub mod fixtures {
    use std::path::Path;

    use redb::Database;

    use super::schema::{META, meta_key};

    /// Writes a store exactly as schema 1 of cairn did.
    ///
    /// # Panics
    /// On any I/O error (test helper).
    pub fn write_schema_v1(path: &Path, created_at_unix: u64) {
        let db = Database::create(path).expect("create v1 store");
        let txn = db.begin_write().expect("begin");
        {
            let mut meta = txn.open_table(META).expect("meta");
            meta.insert(meta_key::SCHEMA_VERSION, 1u32.to_le_bytes().as_slice())
                .expect("v");
            meta.insert(
                meta_key::V1_CREATED_AT,
                created_at_unix.to_le_bytes().as_slice(),
            )
            .expect("created_at");
        }
        txn.commit().expect("commit");
    }

    /// Writes a store exactly as schema 2 of cairn did (device identity, no users).
    ///
    /// # Panics
    /// On any I/O error (test helper).
    pub fn write_schema_v2(path: &Path, created_at_unix: u64) {
        write_schema_v1(path, created_at_unix);
        let db = Database::open(path).expect("open v1 store");
        let txn = db.begin_write().expect("begin");
        super::migrations::MIGRATIONS[0](&txn).expect("v1 to v2");
        txn.open_table(META)
            .expect("meta")
            .insert(meta_key::SCHEMA_VERSION, 2u32.to_le_bytes().as_slice())
            .expect("v");
        txn.commit().expect("commit");
    }

    /// Writes a store exactly as schema 3 of cairn did (identity and access, no models).
    ///
    /// # Panics
    /// On any I/O error (test helper).
    pub fn write_schema_v3(path: &Path, created_at_unix: u64) {
        write_schema_v2(path, created_at_unix);
        let db = Database::open(path).expect("open v2 store");
        let txn = db.begin_write().expect("begin");
        super::migrations::MIGRATIONS[1](&txn).expect("v2 to v3");
        txn.open_table(META)
            .expect("meta")
            .insert(meta_key::SCHEMA_VERSION, 3u32.to_le_bytes().as_slice())
            .expect("v");
        txn.commit().expect("commit");
    }

    /// Writes a store exactly as schema 4 of cairn did (models and deployments, no tasks).
    ///
    /// # Panics
    /// On any I/O error (test helper).
    pub fn write_schema_v4(path: &Path, created_at_unix: u64) {
        write_schema_v3(path, created_at_unix);
        let db = Database::open(path).expect("open v3 store");
        let txn = db.begin_write().expect("begin");
        super::migrations::MIGRATIONS[2](&txn).expect("v3 to v4");
        txn.open_table(META)
            .expect("meta")
            .insert(meta_key::SCHEMA_VERSION, 4u32.to_le_bytes().as_slice())
            .expect("v");
        txn.commit().expect("commit");
    }

    /// Writes a store exactly as schema 5 of cairn did, with one deployment (`m`, version 2
    /// on the GPU, version 1 to roll back to) in the schema-5 layout.
    ///
    /// # Panics
    /// On any I/O error (test helper).
    pub fn write_schema_v5(path: &Path, created_at_unix: u64) {
        use super::schema::{DEPLOYMENTS, DeploySettingsRecord, DeploymentRecord, encode};
        write_schema_v4(path, created_at_unix);
        let db = Database::open(path).expect("open v4 store");
        let txn = db.begin_write().expect("begin");
        super::migrations::MIGRATIONS[3](&txn).expect("v4 to v5");
        let settings = |version, device| DeploySettingsRecord {
            version,
            device,
            instances: 2,
            max_batch_size: 16,
            max_batch_delay_us: 500,
            queue_capacity: 32,
        };
        let record = DeploymentRecord::V1 {
            current: settings(2, 1),
            previous: Some(settings(1, 2)),
            deployed_at: 77,
        };
        txn.open_table(DEPLOYMENTS)
            .expect("deployments")
            .insert("m", encode(&record).as_slice())
            .expect("deployment");
        txn.open_table(META)
            .expect("meta")
            .insert(meta_key::SCHEMA_VERSION, 5u32.to_le_bytes().as_slice())
            .expect("v");
        txn.commit().expect("commit");
    }

    /// Writes a store that claims a schema version from the future.
    ///
    /// # Panics
    /// On any I/O error (test helper).
    pub fn write_schema(path: &Path, version: u32) {
        let db = Database::create(path).expect("create store");
        let txn = db.begin_write().expect("begin");
        txn.open_table(META)
            .expect("meta")
            .insert(meta_key::SCHEMA_VERSION, version.to_le_bytes().as_slice())
            .expect("v");
        txn.commit().expect("commit");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_store_is_current_with_identity() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join(STORE_FILE)).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        let device = store.device().unwrap();
        assert_eq!(device.id.len(), 32);
        store.probe_write().unwrap();
        drop(store);
        // Reopening keeps the identity.
        let again = Store::open(&dir.path().join(STORE_FILE)).unwrap();
        assert_eq!(again.device().unwrap(), device);
    }

    #[test]
    fn schema_1_migrates_keeping_creation_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STORE_FILE);
        fixtures::write_schema_v1(&path, 1_234_567);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(store.device().unwrap().created_at_unix, 1_234_567);
    }

    #[test]
    fn schema_2_migrates_to_identity_tables() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STORE_FILE);
        fixtures::write_schema_v2(&path, 42);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(store.device().unwrap().created_at_unix, 42);
        assert_eq!(store.server_secret().unwrap().len(), 32);
        assert!(store.list_users().unwrap().is_empty());
    }

    #[test]
    fn schema_3_migrates_to_registry_tables() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STORE_FILE);
        fixtures::write_schema_v3(&path, 7);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(store.device().unwrap().created_at_unix, 7);
        assert!(store.list_models().unwrap().is_empty());
        assert!(store.list_deployments().unwrap().is_empty());
        assert!(!store.demo_model_done().unwrap());
    }

    #[test]
    fn schema_4_migrates_to_task_tables() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STORE_FILE);
        fixtures::write_schema_v4(&path, 9);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(store.device().unwrap().created_at_unix, 9);
        let loaded = store.load_tasks().unwrap();
        assert!(loaded.active.is_empty() && loaded.finished.is_empty());
        assert_eq!(loaded.next_task_id, 1);
        assert!(store.schedules().unwrap().is_empty());
    }

    #[test]
    fn schema_5_migrates_deployments_to_v2_at_f32() {
        use schema::{DeploySettingsRecordV2, DeploymentRecord};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STORE_FILE);
        fixtures::write_schema_v5(&path, 5);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        let deployments = store.list_deployments().unwrap();
        assert_eq!(deployments.len(), 1);
        let (name, record) = &deployments[0];
        assert_eq!(name, "m");
        let DeploymentRecord::V2(deployed) = record else {
            panic!("not rewritten: {record:?}");
        };
        let settings = |version, device| DeploySettingsRecordV2 {
            version,
            device,
            precision: 0,
            instances: 2,
            max_batch_size: 16,
            max_batch_delay_us: 500,
            queue_capacity: 32,
        };
        assert_eq!(deployed.current, settings(2, 1));
        assert_eq!(deployed.previous, Some(settings(1, 2)));
        assert_eq!(deployed.deployed_at, 77);
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STORE_FILE);
        fixtures::write_schema(&path, SCHEMA_VERSION + 1);
        let err = Store::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::NewerSchema { .. }), "{err}");
        assert!(err.to_string().contains("never downgrades"));
    }
}
