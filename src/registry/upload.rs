//! An upload in progress: chunks handed to a writer thread that hashes and writes them to
//! a temp file; finishing verifies, validates and records the version.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::{Registry, RegistryError, VersionView, blobs, blocking};

/// An upload in progress. Dropping it (the client went away, a timeout, an error) deletes
/// the temp file: nothing of a partial upload stays.
pub struct Upload {
    pub(super) registry: Arc<Registry>,
    pub(super) model: String,
    pub(super) sender: Option<mpsc::Sender<Bytes>>,
    pub(super) task: Option<tokio::task::JoinHandle<Result<blobs::TempWriter, RegistryError>>>,
    pub(super) received: u64,
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upload")
            .field("model", &self.model)
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

impl Upload {
    /// Bytes received so far.
    #[must_use]
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Hands a chunk to the writer thread.
    ///
    /// # Errors
    /// Past `limits.max_model_bytes`, or the writer failed (disk full).
    pub async fn push(&mut self, chunk: Bytes) -> Result<(), RegistryError> {
        self.received += chunk.len() as u64;
        if self.received > self.registry.max_model_bytes() {
            return Err(RegistryError::TooLarge(self.registry.max_model_bytes()));
        }
        let sender = self
            .sender
            .as_ref()
            .ok_or_else(|| RegistryError::Io("the upload is closed".into()))?;
        if sender.send(chunk).await.is_err() {
            // The writer stopped: its error says why.
            return Err(self.writer_error().await);
        }
        Ok(())
    }

    async fn writer_error(&mut self) -> RegistryError {
        self.sender = None;
        match self.task.take() {
            Some(task) => match task.await {
                Ok(Err(e)) => e,
                Ok(Ok(_)) => RegistryError::Io("the writer stopped".into()),
                Err(e) => RegistryError::Io(e.to_string()),
            },
            None => RegistryError::Io("the upload is closed".into()),
        }
    }

    /// Completes the upload: fsync, signature check, validation, blob in place, version
    /// recorded.
    ///
    /// # Errors
    /// An empty body, a signature problem, I/O or store failure. An invalid model is not an
    /// error: it is recorded as an `invalid` version with the reason.
    pub async fn finish(
        mut self,
        signature: Option<String>,
        created_by: String,
    ) -> Result<VersionView, RegistryError> {
        self.sender = None;
        let task = self
            .task
            .take()
            .ok_or_else(|| RegistryError::Io("the upload is closed".into()))?;
        let writer = task.await.map_err(|e| RegistryError::Io(e.to_string()))??;
        if self.received == 0 {
            return Err(RegistryError::Invalid(
                "the body is empty: send the .onnx file as the request body".into(),
            ));
        }
        let registry = Arc::clone(&self.registry);
        let model = self.model.clone();
        blocking(move || {
            let written = writer
                .finish()
                .map_err(|e| RegistryError::Io(e.to_string()))?;
            registry.record_upload(&model, &written, signature.as_deref(), created_by)
        })
        .await
    }
}
