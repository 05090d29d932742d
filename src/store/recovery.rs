//! The redb handle, reopened after a failed write.
//!
//! After one I/O error (a full disk, above all), redb refuses every later transaction with
//! `PreviousIo` until the file is closed and opened again, even once space is back. [`Db`]
//! does that by itself: the first transaction that meets `PreviousIo` drops the database,
//! waits for in-flight transactions to let go of the file, and opens it again (redb
//! repairs what the failed commit left; nothing committed is lost). While that fails (the
//! disk is still full), every transaction fails fast with a clear error, readiness says
//! false, and another attempt is made at most once a second.
//!
//! `Db` offers the calls the store makes (`begin_write`, and `begin_read` through
//! [`ReadableDatabase`]) with redb's own signatures, and an in-place [`Db::compact`].

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use redb::{
    CacheStats, CompactionError, Database, DatabaseError, ReadTransaction, ReadableDatabase,
    StorageError, TransactionError, WriteTransaction,
};

/// How often a compaction looks again for open transactions to end.
const COMPACT_RETRY: Duration = Duration::from_millis(20);

/// Reopen attempts are this far apart at least.
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// How long a reopen waits for in-flight transactions to release the file.
const RELEASE_WAIT: Duration = Duration::from_secs(2);

pub struct Db {
    path: PathBuf,
    current: RwLock<Option<Arc<Database>>>,
    /// Set when redb reported `PreviousIo`: the next transaction reopens first.
    failed: AtomicBool,
    last_attempt: Mutex<Option<Instant>>,
}

fn unavailable(message: &str) -> TransactionError {
    TransactionError::Storage(StorageError::Io(io::Error::other(message.to_owned())))
}

const REOPENING: &str = "the store is reopening after a failed write (disk full or I/O error); \
                         it recovers by itself once the data dir's file system has room";

impl Db {
    /// Opens (or creates) the database file.
    ///
    /// # Errors
    /// What `Database::create` returns.
    pub fn open(path: &Path) -> Result<Self, DatabaseError> {
        let db = Database::create(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            current: RwLock::new(Some(Arc::new(db))),
            failed: AtomicBool::new(false),
            last_attempt: Mutex::new(None),
        })
    }

    fn handle(&self) -> Result<Arc<Database>, TransactionError> {
        if self.failed.load(Ordering::Acquire) {
            self.reopen()?;
        }
        self.current
            .read()
            .expect("poisoned")
            .clone()
            .ok_or_else(|| unavailable(REOPENING))
    }

    /// Runs `begin` on the database; on `PreviousIo`, reopens it and tries once more.
    fn begin<T>(
        &self,
        begin: impl Fn(&Database) -> Result<T, TransactionError>,
    ) -> Result<T, TransactionError> {
        let db = self.handle()?;
        match begin(&db) {
            Err(TransactionError::Storage(StorageError::PreviousIo)) => {
                drop(db);
                self.failed.store(true, Ordering::Release);
                self.reopen()?;
                begin(&*self.handle()?)
            }
            other => other,
        }
    }

    /// # Errors
    /// Like `Database::begin_write`, plus a clear error while the file cannot be reopened.
    pub fn begin_write(&self) -> Result<WriteTransaction, TransactionError> {
        self.begin(Database::begin_write)
    }

    /// Compacts the file in place and gives its free pages back to the file system.
    /// redb needs the database to itself: new transactions wait (on `current`) while it
    /// runs, and it starts only once every open read transaction has ended, waiting up to
    /// `wait` for them (released between tries, so a holder that needs one more
    /// transaction to finish is not deadlocked). `Ok(false)`: nothing to reclaim.
    ///
    /// # Errors
    /// Transactions stayed open past `wait`, a savepoint exists, or the I/O failed.
    pub fn compact(&self, wait: Duration) -> Result<bool, redb::Error> {
        let deadline = Instant::now() + wait;
        loop {
            let mut current = self.current.write().expect("poisoned");
            let Some(slot) = current.as_mut() else {
                return Err(redb::Error::Io(io::Error::other(REOPENING)));
            };
            // A handle is cloned only for the moment a transaction begins.
            if let Some(db) = Arc::get_mut(slot) {
                // Caught here, so that a panic inside redb cannot poison `current`.
                let result =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| db.compact()))
                        .unwrap_or_else(|_| {
                            Err(CompactionError::Storage(StorageError::Io(
                                io::Error::other("the compaction panicked; the store is reopened"),
                            )))
                        });
                match result {
                    Err(CompactionError::TransactionInProgress) => {}
                    Err(CompactionError::Storage(e)) => {
                        // Whatever state redb was left in, the next transaction reopens.
                        self.failed.store(true, Ordering::Release);
                        return Err(e.into());
                    }
                    other => return other.map_err(redb::Error::from),
                }
            }
            drop(current);
            if Instant::now() >= deadline {
                return Err(redb::Error::TransactionInProgress);
            }
            std::thread::sleep(COMPACT_RETRY);
        }
    }

    /// Drops the failed database and opens the file again (at most once a second).
    fn reopen(&self) -> Result<(), TransactionError> {
        let mut last = self.last_attempt.lock().expect("poisoned");
        if !self.failed.load(Ordering::Acquire) {
            return Ok(()); // another thread did it while we waited
        }
        if last.is_some_and(|at| at.elapsed() < RETRY_EVERY) {
            return Err(unavailable(REOPENING));
        }
        *last = Some(Instant::now());
        // New transactions now get the error above; in-flight ones finish on the old file.
        drop(self.current.write().expect("poisoned").take());
        let deadline = Instant::now() + RELEASE_WAIT;
        loop {
            match Database::create(&self.path) {
                Ok(db) => {
                    *self.current.write().expect("poisoned") = Some(Arc::new(db));
                    self.failed.store(false, Ordering::Release);
                    tracing::warn!(path = %self.path.display(), "store reopened after a failed write");
                    return Ok(());
                }
                Err(DatabaseError::DatabaseAlreadyOpen) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the store cannot be reopened yet");
                    return Err(unavailable(&format!("{REOPENING} (reopening failed: {e})")));
                }
            }
        }
    }
}

impl ReadableDatabase for Db {
    fn begin_read(&self) -> Result<ReadTransaction, TransactionError> {
        self.begin(ReadableDatabase::begin_read)
    }

    fn cache_stats(&self) -> CacheStats {
        if let Some(db) = self.current.read().expect("poisoned").as_ref() {
            return db.cache_stats();
        }
        // Between two databases (cairn never asks): the zeros of an empty one.
        Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .expect("an in-memory database")
            .cache_stats()
    }
}
