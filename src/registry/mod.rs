//! The model registry: models (name, description, tags), their versions (content-addressed
//! ONNX blobs, validated at upload, optionally signed), and the rules that keep them
//! consistent (an invalid version never deploys; a deployed one is never deleted).
//!
//! Uploads stream to a temp file on a blocking thread ([`Upload`]); hashing, validation
//! (parse, operator check, a warm-up run on synthetic inputs) and fsync all run off the
//! tokio workers.

pub mod blobs;
pub mod signing;
mod upload;
mod validate;

pub use upload::Upload;

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::mpsc;

use self::blobs::{Blobs, Written};
use self::signing::TrustedKey;
use crate::engine::LoadLimits;
use crate::store::schema::{ModelRecord, TensorSpecRecord, VersionRecord};
use crate::store::{Store, StoreError, unix_now};

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    SignatureRequired(String),
    #[error("{0}")]
    SignatureInvalid(String),
    #[error("the upload is larger than limits.max_model_bytes ({0} bytes)")]
    TooLarge(u64),
    #[error("the upload stopped before its end: {0}")]
    Incomplete(String),
    #[error("cannot write the model file: {0}")]
    Io(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A model as the API shows it (without its deployment, which `serving` owns).
#[derive(Debug, Clone, Serialize)]
pub struct ModelView {
    pub name: String,
    pub description: String,
    pub tags: Vec<String>,
    pub created_at: u64,
    pub updated_at: u64,
    pub versions: Vec<VersionView>,
}

/// An input or output as KServe V2 names it: `FP32`, dims with -1 for dynamic ones.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TensorView {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VersionView {
    pub version: u32,
    pub sha256: String,
    pub size: u64,
    /// `ready` or `invalid`.
    pub state: &'static str,
    pub error: Option<String>,
    pub created_at: u64,
    pub created_by: String,
    pub inputs: Vec<TensorView>,
    pub outputs: Vec<TensorView>,
    pub ops: Vec<(String, u32)>,
    /// `none`, `verified` or `untrusted`.
    pub signature: &'static str,
    pub signed_by: Option<String>,
    pub weight_bytes: u64,
}

/// What the registry needs from the configuration.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    pub require_signature: bool,
    pub trusted_keys: Vec<TrustedKey>,
    pub max_model_bytes: u64,
    pub limits: LoadLimits,
}

/// The registry service.
#[derive(Debug)]
pub struct Registry {
    store: Arc<Store>,
    pub(crate) blobs: Blobs,
    config: RegistryConfig,
}

/// ONNX element type name → KServe V2 datatype.
#[must_use]
pub fn v2_datatype(onnx: &str) -> &'static str {
    match onnx {
        "FLOAT" => "FP32",
        "FLOAT16" => "FP16",
        "DOUBLE" => "FP64",
        "BFLOAT16" => "BF16",
        "INT64" => "INT64",
        "INT32" => "INT32",
        "INT16" => "INT16",
        "INT8" => "INT8",
        "UINT64" => "UINT64",
        "UINT32" => "UINT32",
        "UINT16" => "UINT16",
        "UINT8" => "UINT8",
        "BOOL" => "BOOL",
        "STRING" => "BYTES",
        _ => "UNSUPPORTED",
    }
}

impl From<&crate::engine::TensorSpec> for TensorView {
    fn from(spec: &crate::engine::TensorSpec) -> Self {
        tensor_view(&validate::record(spec))
    }
}

fn tensor_view(spec: &TensorSpecRecord) -> TensorView {
    TensorView {
        name: spec.name.clone(),
        datatype: v2_datatype(&spec.dtype).to_owned(),
        shape: spec.shape.clone(),
    }
}

/// The API view of a stored version.
#[must_use]
pub fn version_view(version: u32, record: &VersionRecord) -> VersionView {
    let VersionRecord::V1 {
        sha256,
        size,
        invalid,
        created_at,
        created_by,
        inputs,
        outputs,
        ops,
        signature,
        signed_by,
        weight_bytes,
    } = record;
    VersionView {
        version,
        sha256: blobs::hex(sha256),
        size: *size,
        state: if invalid.is_some() {
            "invalid"
        } else {
            "ready"
        },
        error: invalid.clone(),
        created_at: *created_at,
        created_by: created_by.clone(),
        inputs: inputs.iter().map(tensor_view).collect(),
        outputs: outputs.iter().map(tensor_view).collect(),
        ops: ops.clone(),
        signature: match signature {
            1 => "verified",
            2 => "untrusted",
            _ => "none",
        },
        signed_by: signed_by.clone(),
        weight_bytes: *weight_bytes,
    }
}

/// Model names: 1–64 of `A-Z a-z 0-9 . _ -`, starting with a letter or digit (they appear
/// in URLs, metric labels and file names).
///
/// # Errors
/// A message saying what is allowed.
pub fn check_name(name: &str) -> Result<(), RegistryError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(RegistryError::Invalid(format!(
            "model name `{}`: use 1-64 of A-Z a-z 0-9 . _ -, starting with a letter or digit",
            name.chars().take(80).collect::<String>()
        )))
    }
}

fn check_text(description: &str, tags: &[String]) -> Result<(), RegistryError> {
    if description.len() > 1024 {
        return Err(RegistryError::Invalid(
            "description: at most 1024 bytes".into(),
        ));
    }
    if tags.len() > 32 || tags.iter().any(|t| t.is_empty() || t.len() > 64) {
        return Err(RegistryError::Invalid(
            "tags: at most 32, each 1-64 bytes".into(),
        ));
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, RegistryError> + Send + 'static,
) -> Result<T, RegistryError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| RegistryError::Io(format!("worker failed: {e}")))?
}

impl Registry {
    /// Opens the registry over the store and `DATA_DIR/blobs`, deleting blob files that
    /// no version refers to (left by a crash between the file and the store commit).
    ///
    /// # Errors
    /// The blob directory cannot be created, or the store cannot be read.
    pub fn open(
        store: Arc<Store>,
        data_dir: &std::path::Path,
        config: RegistryConfig,
    ) -> Result<Self, RegistryError> {
        let blobs = Blobs::open(data_dir).map_err(|e| RegistryError::Io(e.to_string()))?;
        blobs.collect_garbage(&store.referenced_blobs()?);
        Ok(Self {
            store,
            blobs,
            config,
        })
    }

    #[must_use]
    pub fn max_model_bytes(&self) -> u64 {
        self.config.max_model_bytes
    }

    #[must_use]
    pub fn limits(&self) -> &LoadLimits {
        &self.config.limits
    }

    /// Creates a model with no versions.
    ///
    /// # Errors
    /// A bad name, description or tags; the name is taken.
    pub async fn create_model(
        self: &Arc<Self>,
        name: String,
        description: String,
        tags: Vec<String>,
    ) -> Result<ModelView, RegistryError> {
        check_name(&name)?;
        check_text(&description, &tags)?;
        let this = Arc::clone(self);
        blocking(move || {
            let now = unix_now();
            this.store.create_model(
                &name,
                &ModelRecord::V1 {
                    description,
                    tags,
                    created_at: now,
                    updated_at: now,
                    next_version: 1,
                },
            )?;
            this.view(&name)
        })
        .await
    }

    fn view(&self, name: &str) -> Result<ModelView, RegistryError> {
        let record = self
            .store
            .model(name)?
            .ok_or_else(|| StoreError::NotFound(format!("model {name}")))?;
        let versions = self.store.versions(name)?;
        Ok(model_view(name, &record, &versions))
    }

    /// One model with its versions.
    ///
    /// # Errors
    /// `NotFound`; store failure.
    pub async fn model(self: &Arc<Self>, name: &str) -> Result<ModelView, RegistryError> {
        let (this, name) = (Arc::clone(self), name.to_owned());
        blocking(move || this.view(&name)).await
    }

    /// Every model with its versions.
    ///
    /// # Errors
    /// Store failure.
    pub async fn list(self: &Arc<Self>) -> Result<Vec<ModelView>, RegistryError> {
        let this = Arc::clone(self);
        blocking(move || {
            this.store
                .list_models()?
                .into_iter()
                .map(|(name, record)| {
                    let versions = this.store.versions(&name)?;
                    Ok(model_view(&name, &record, &versions))
                })
                .collect()
        })
        .await
    }

    /// Changes description and/or tags.
    ///
    /// # Errors
    /// `NotFound`; bad text.
    pub async fn update_model(
        self: &Arc<Self>,
        name: &str,
        description: Option<String>,
        tags: Option<Vec<String>>,
    ) -> Result<ModelView, RegistryError> {
        check_text(
            description.as_deref().unwrap_or(""),
            tags.as_deref().unwrap_or(&[]),
        )?;
        let (this, name) = (Arc::clone(self), name.to_owned());
        blocking(move || {
            this.store.update_model(&name, |record| {
                let ModelRecord::V1 {
                    description: d,
                    tags: t,
                    updated_at,
                    ..
                } = record;
                if let Some(description) = description {
                    *d = description;
                }
                if let Some(tags) = tags {
                    *t = tags;
                }
                *updated_at = unix_now();
            })?;
            this.view(&name)
        })
        .await
    }

    /// Deletes a model and its versions (refused while deployed).
    ///
    /// # Errors
    /// `NotFound`, `InUse`.
    pub async fn delete_model(self: &Arc<Self>, name: &str) -> Result<(), RegistryError> {
        let (this, name) = (Arc::clone(self), name.to_owned());
        blocking(move || {
            let _guard = this.blobs.lock.lock().unwrap_or_else(|p| p.into_inner());
            let orphans = this.store.delete_model(&name)?;
            this.blobs.remove(&orphans);
            Ok(())
        })
        .await
    }

    /// One version.
    ///
    /// # Errors
    /// `NotFound`.
    pub async fn version(
        self: &Arc<Self>,
        name: &str,
        version: u32,
    ) -> Result<(VersionView, VersionRecord), RegistryError> {
        let (this, name) = (Arc::clone(self), name.to_owned());
        blocking(move || {
            let record = this.store.version(&name, version)?.ok_or_else(|| {
                StoreError::NotFound(format!("version {version} of model {name}"))
            })?;
            Ok((version_view(version, &record), record))
        })
        .await
    }

    /// Deletes a version (refused while deployed).
    ///
    /// # Errors
    /// `NotFound`, `InUse`.
    pub async fn delete_version(
        self: &Arc<Self>,
        name: &str,
        version: u32,
    ) -> Result<(), RegistryError> {
        let (this, name) = (Arc::clone(self), name.to_owned());
        blocking(move || {
            let _guard = this.blobs.lock.lock().unwrap_or_else(|p| p.into_inner());
            let orphans = this.store.delete_version(&name, version)?;
            this.blobs.remove(&orphans);
            Ok(())
        })
        .await
    }

    /// Reads a version's blob (for loading).
    ///
    /// # Errors
    /// The file is missing or unreadable.
    pub fn read_blob(&self, sha256: &[u8; 32]) -> Result<Vec<u8>, RegistryError> {
        std::fs::read(self.blobs.path(sha256)).map_err(|e| {
            RegistryError::Io(format!(
                "model file {} cannot be read: {e}",
                blobs::hex(sha256)
            ))
        })
    }

    /// Starts an upload of a new version of `name` (which must exist).
    ///
    /// # Errors
    /// `NotFound`; the temp file cannot be created.
    pub async fn begin_upload(self: &Arc<Self>, name: &str) -> Result<Upload, RegistryError> {
        let (this, model) = (Arc::clone(self), name.to_owned());
        let writer = blocking(move || {
            this.store
                .model(&model)?
                .ok_or_else(|| StoreError::NotFound(format!("model {model}")))?;
            this.blobs
                .temp_writer()
                .map_err(|e| RegistryError::Io(e.to_string()))
        })
        .await?;
        let (sender, mut chunks) = mpsc::channel::<Bytes>(16);
        // The writer thread: hashes and writes each chunk; when the sender goes away it
        // returns the file, which is dropped (deleted) unless `finish` takes it on.
        let task = tokio::task::spawn_blocking(move || {
            let mut writer = writer;
            while let Some(chunk) = chunks.blocking_recv() {
                writer
                    .write(&chunk)
                    .map_err(|e| RegistryError::Io(e.to_string()))?;
            }
            Ok(writer)
        });
        Ok(Upload {
            registry: Arc::clone(self),
            model: name.to_owned(),
            sender: Some(sender),
            task: Some(task),
            received: 0,
        })
    }

    /// Verifies, validates and records a finished upload.
    fn record_upload(
        &self,
        model: &str,
        written: &Written,
        signature: Option<&str>,
        created_by: String,
    ) -> Result<VersionView, RegistryError> {
        let (signature_state, signed_by) = match signature {
            Some(text) => {
                let signature =
                    signing::parse_signature(text).map_err(RegistryError::SignatureInvalid)?;
                match signing::verify(&self.config.trusted_keys, &written.sha256, &signature) {
                    Some(name) => (1, Some(name)),
                    None if self.config.require_signature => {
                        return Err(RegistryError::SignatureInvalid(
                            "the signature does not verify against any of registry.trusted_keys"
                                .into(),
                        ));
                    }
                    None => (2, None),
                }
            }
            None if self.config.require_signature => {
                return Err(RegistryError::SignatureRequired(
                    "this device accepts only signed models (registry.require_signature): send \
                     X-Cairn-Signature with `cairn model sign`'s output"
                        .into(),
                ));
            }
            None => (0, None),
        };
        let bytes = std::fs::read(&written.path).map_err(|e| RegistryError::Io(e.to_string()))?;
        let checked = validate::validate(&bytes, &self.config.limits);
        drop(bytes);
        let _guard = self.blobs.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.blobs
            .commit(written)
            .map_err(|e| RegistryError::Io(e.to_string()))?;
        let result = self.store.add_version(model, |_| VersionRecord::V1 {
            sha256: written.sha256,
            size: written.size,
            invalid: checked.invalid,
            created_at: unix_now(),
            created_by,
            inputs: checked.inputs,
            outputs: checked.outputs,
            ops: checked.ops,
            signature: signature_state,
            signed_by,
            weight_bytes: checked.weight_bytes,
        });
        match result {
            Ok((number, record)) => Ok(version_view(number, &record)),
            Err(e) => {
                // The model went away meanwhile: the blob may now be unreferenced.
                if let Ok(referenced) = self.store.referenced_blobs()
                    && !referenced.contains(&written.sha256)
                {
                    self.blobs.remove(&[written.sha256]);
                }
                Err(e.into())
            }
        }
    }

    /// Adds a version from bytes already in memory (the built-in demo model).
    ///
    /// # Errors
    /// As an upload.
    pub async fn add_version_bytes(
        self: &Arc<Self>,
        name: &str,
        bytes: Bytes,
        created_by: &str,
    ) -> Result<VersionView, RegistryError> {
        let mut upload = self.begin_upload(name).await?;
        upload.push(bytes).await?;
        upload.finish(None, created_by.to_owned()).await
    }
}

fn model_view(name: &str, record: &ModelRecord, versions: &[(u32, VersionRecord)]) -> ModelView {
    let ModelRecord::V1 {
        description,
        tags,
        created_at,
        updated_at,
        ..
    } = record;
    ModelView {
        name: name.to_owned(),
        description: description.clone(),
        tags: tags.clone(),
        created_at: *created_at,
        updated_at: *updated_at,
        versions: versions.iter().map(|(n, r)| version_view(*n, r)).collect(),
    }
}
