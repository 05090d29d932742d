//! Content-addressed model files: `blobs/sha256/<hex>` in the data dir. A file is written
//! to `blobs/tmp/`, fsynced, renamed into place and the directory fsynced, so a blob is
//! either whole or absent. Identical uploads share one file.
//!
//! Invariant: a blob file is deleted only after the store commit that removed its last
//! reference, under the same lock that new references take (so an upload of the same
//! bytes cannot lose its file to a concurrent delete).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

/// The blob directory.
#[derive(Debug)]
pub struct Blobs {
    root: PathBuf,
    /// Held while a reference is added (rename + store insert) or a file deleted.
    pub(super) lock: Mutex<()>,
}

/// A finished temp file, not yet in place.
#[derive(Debug)]
pub struct Written {
    pub path: PathBuf,
    pub sha256: [u8; 32],
    pub size: u64,
}

impl Drop for Written {
    fn drop(&mut self) {
        // Moved into place (then the path no longer exists) or abandoned.
        let _ = std::fs::remove_file(&self.path);
    }
}

pub use crate::store::hex;

impl Blobs {
    /// Opens (creating) `DATA_DIR/blobs`, removing temp files an earlier process left.
    ///
    /// # Errors
    /// The directories cannot be created.
    pub fn open(data_dir: &Path) -> std::io::Result<Self> {
        let root = data_dir.join("blobs");
        std::fs::create_dir_all(root.join("sha256"))?;
        std::fs::create_dir_all(root.join("tmp"))?;
        for entry in std::fs::read_dir(root.join("tmp"))?.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
        Ok(Self {
            root,
            lock: Mutex::new(()),
        })
    }

    #[must_use]
    pub fn path(&self, sha256: &[u8; 32]) -> PathBuf {
        self.root.join("sha256").join(hex(sha256))
    }

    /// A new temp file for an upload.
    ///
    /// # Errors
    /// I/O failure (disk full, ...).
    pub fn temp_writer(&self) -> std::io::Result<TempWriter> {
        let mut name = [0u8; 8];
        getrandom::fill(&mut name).map_err(std::io::Error::other)?;
        let path = self.root.join("tmp").join(format!("upload-{}", hex(&name)));
        let file = File::options().write(true).create_new(true).open(&path)?;
        Ok(TempWriter {
            file: Some(file),
            path,
            hasher: Sha256::new(),
            size: 0,
        })
    }

    /// Moves a finished temp file into place (unless the same blob is there already) and
    /// makes the rename durable. Call with `lock` held.
    ///
    /// # Errors
    /// I/O failure.
    pub fn commit(&self, written: &Written) -> std::io::Result<PathBuf> {
        let target = self.path(&written.sha256);
        if !target.exists() {
            std::fs::rename(&written.path, &target)?;
            File::open(self.root.join("sha256"))?.sync_all()?;
        }
        Ok(target)
    }

    /// Deletes blob files no version refers to. Call with `lock` held, after the commit
    /// that removed the references.
    pub fn remove(&self, orphans: &[[u8; 32]]) {
        for sha in orphans {
            if let Err(e) = std::fs::remove_file(self.path(sha))
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(blob = %hex(sha), error = %e, "cannot delete a model blob");
            }
        }
    }

    /// Deletes every blob file not in `referenced` (at start: files of versions whose
    /// store commit never happened).
    pub fn collect_garbage(&self, referenced: &std::collections::HashSet<[u8; 32]>) {
        let Ok(entries) = std::fs::read_dir(self.root.join("sha256")) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let keep = name.to_str().is_some_and(|n| {
                referenced
                    .iter()
                    .any(|sha| hex(sha).eq_ignore_ascii_case(n))
            });
            if !keep {
                tracing::info!(blob = ?name, "removing an unreferenced model blob");
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// Writes an upload to a temp file, hashing as it goes; the file is removed unless
/// `finish` hands it on.
#[derive(Debug)]
pub struct TempWriter {
    file: Option<File>,
    path: PathBuf,
    hasher: Sha256,
    size: u64,
}

impl TempWriter {
    /// Appends a chunk.
    ///
    /// # Errors
    /// I/O failure.
    pub fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        self.hasher.update(chunk);
        self.size += chunk.len() as u64;
        self.file
            .as_mut()
            .ok_or_else(|| std::io::Error::other("closed"))?
            .write_all(chunk)
    }

    /// Flushes the file to disk and returns it, still in the temp directory.
    ///
    /// # Errors
    /// I/O failure.
    pub fn finish(mut self) -> std::io::Result<Written> {
        let file = self
            .file
            .take()
            .ok_or_else(|| std::io::Error::other("closed"))?;
        file.sync_all()?;
        drop(file);
        let hasher = std::mem::take(&mut self.hasher);
        Ok(Written {
            path: std::mem::take(&mut self.path),
            sha256: hasher.finalize().into(),
            size: self.size,
        })
    }
}

impl Drop for TempWriter {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            drop(self.file.take());
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
