//! Stored models, versions and deployments. Blob files live beside the store (in the
//! registry's blob directory); the store only knows their SHA-256.

use redb::{Durability, ReadableDatabase, ReadableTable};

use super::schema::{
    DEPLOYMENTS, Deployed, DeploymentRecord, META, MODEL_VERSIONS, MODELS, ModelRecord,
    VersionRecord, encode, meta_key,
};
use super::{Store, StoreError, decode};

impl Store {
    /// Creates a model; the name must be free.
    ///
    /// # Errors
    /// `Conflict` when the name is taken; I/O failure.
    pub fn create_model(&self, name: &str, record: &ModelRecord) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let mut models = txn.open_table(MODELS)?;
            if models.get(name)?.is_some() {
                return Err(StoreError::Conflict(format!("model {name}")));
            }
            models.insert(name, encode(record).as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    /// One model.
    ///
    /// # Errors
    /// I/O failure or a damaged record.
    pub fn model(&self, name: &str) -> Result<Option<ModelRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let models = txn.open_table(MODELS)?;
        models
            .get(name)?
            .map(|raw| decode(raw.value(), "models"))
            .transpose()
    }

    /// Every model, by name.
    ///
    /// # Errors
    /// I/O failure or a damaged record.
    pub fn list_models(&self) -> Result<Vec<(String, ModelRecord)>, StoreError> {
        let txn = self.db.begin_read()?;
        let models = txn.open_table(MODELS)?;
        models
            .iter()?
            .map(|entry| {
                let (key, value) = entry?;
                Ok((key.value().to_owned(), decode(value.value(), "models")?))
            })
            .collect()
    }

    /// Changes a model's record in one transaction.
    ///
    /// # Errors
    /// `NotFound`; I/O failure.
    pub fn update_model(
        &self,
        name: &str,
        change: impl FnOnce(&mut ModelRecord),
    ) -> Result<ModelRecord, StoreError> {
        let txn = self.db.begin_write()?;
        let record = {
            let mut models = txn.open_table(MODELS)?;
            let mut record: ModelRecord = match models.get(name)? {
                Some(raw) => decode(raw.value(), "models")?,
                None => return Err(StoreError::NotFound(format!("model {name}"))),
            };
            change(&mut record);
            models.insert(name, encode(&record).as_slice())?;
            record
        };
        txn.commit()?;
        Ok(record)
    }

    /// Deletes a model and its versions, unless it is deployed. Returns the blobs no
    /// version refers to any more (the caller deletes their files after this commit).
    ///
    /// # Errors
    /// `NotFound`, `InUse` while deployed; I/O failure.
    pub fn delete_model(&self, name: &str) -> Result<Vec<[u8; 32]>, StoreError> {
        let txn = self.db.begin_write()?;
        let orphans = {
            if txn.open_table(DEPLOYMENTS)?.get(name)?.is_some() {
                return Err(StoreError::InUse(format!(
                    "model {name} is deployed; undeploy it first"
                )));
            }
            if txn.open_table(MODELS)?.remove(name)?.is_none() {
                return Err(StoreError::NotFound(format!("model {name}")));
            }
            let mut versions = txn.open_table(MODEL_VERSIONS)?;
            let mut removed = Vec::new();
            let doomed: Vec<u32> = versions
                .range((name, 0)..=(name, u32::MAX))?
                .map(|entry| entry.map(|(k, _)| k.value().1))
                .collect::<Result<_, _>>()?;
            for version in doomed {
                if let Some(raw) = versions.remove((name, version))? {
                    let VersionRecord::V1 { sha256, .. } = decode(raw.value(), "model_versions")?;
                    removed.push(sha256);
                }
            }
            unreferenced(&versions, removed)?
        };
        txn.commit()?;
        Ok(orphans)
    }

    /// Adds a version under the model's next number, in one transaction.
    ///
    /// # Errors
    /// `NotFound` when the model is gone; I/O failure.
    pub fn add_version(
        &self,
        name: &str,
        make: impl FnOnce(u32) -> VersionRecord,
    ) -> Result<(u32, VersionRecord), StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        let (number, record) = {
            let mut models = txn.open_table(MODELS)?;
            let mut model: ModelRecord = match models.get(name)? {
                Some(raw) => decode(raw.value(), "models")?,
                None => return Err(StoreError::NotFound(format!("model {name}"))),
            };
            let ModelRecord::V1 {
                next_version,
                updated_at,
                ..
            } = &mut model;
            let number = (*next_version).max(1);
            *next_version = number + 1;
            *updated_at = super::unix_now();
            models.insert(name, encode(&model).as_slice())?;
            let record = make(number);
            txn.open_table(MODEL_VERSIONS)?
                .insert((name, number), encode(&record).as_slice())?;
            (number, record)
        };
        txn.commit()?;
        Ok((number, record))
    }

    /// The versions of a model, oldest first.
    ///
    /// # Errors
    /// I/O failure or a damaged record.
    pub fn versions(&self, name: &str) -> Result<Vec<(u32, VersionRecord)>, StoreError> {
        let txn = self.db.begin_read()?;
        let versions = txn.open_table(MODEL_VERSIONS)?;
        versions
            .range((name, 0)..=(name, u32::MAX))?
            .map(|entry| {
                let (key, value) = entry?;
                Ok((key.value().1, decode(value.value(), "model_versions")?))
            })
            .collect()
    }

    /// One version.
    ///
    /// # Errors
    /// I/O failure or a damaged record.
    pub fn version(&self, name: &str, version: u32) -> Result<Option<VersionRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let versions = txn.open_table(MODEL_VERSIONS)?;
        versions
            .get((name, version))?
            .map(|raw| decode(raw.value(), "model_versions"))
            .transpose()
    }

    /// Deletes a version unless it is the deployed one. Returns its blob when no other
    /// version refers to it (the caller deletes the file after this commit).
    ///
    /// # Errors
    /// `NotFound`, `InUse` while deployed; I/O failure.
    pub fn delete_version(&self, name: &str, version: u32) -> Result<Vec<[u8; 32]>, StoreError> {
        let txn = self.db.begin_write()?;
        let orphans = {
            let mut deployments = txn.open_table(DEPLOYMENTS)?;
            let deployment: Option<DeploymentRecord> = deployments
                .get(name)?
                .map(|raw| decode(raw.value(), "deployments"))
                .transpose()?;
            if let Some(Deployed {
                current,
                previous,
                deployed_at,
            }) = deployment.map(DeploymentRecord::latest)
            {
                if current.version == version {
                    return Err(StoreError::InUse(format!(
                        "version {version} of {name} is deployed; deploy another version or undeploy first"
                    )));
                }
                if previous.as_ref().is_some_and(|p| p.version == version) {
                    // Rollback can no longer go there.
                    let record = DeploymentRecord::from(Deployed {
                        current,
                        previous: None,
                        deployed_at,
                    });
                    deployments.insert(name, encode(&record).as_slice())?;
                }
            }
            let mut versions = txn.open_table(MODEL_VERSIONS)?;
            let Some(raw) = versions.remove((name, version))? else {
                return Err(StoreError::NotFound(format!("version {version} of {name}")));
            };
            let VersionRecord::V1 { sha256, .. } = decode(raw.value(), "model_versions")?;
            drop(raw);
            unreferenced(&versions, vec![sha256])?
        };
        txn.commit()?;
        Ok(orphans)
    }

    /// Every blob some version refers to.
    ///
    /// # Errors
    /// I/O failure or a damaged record.
    pub fn referenced_blobs(&self) -> Result<std::collections::HashSet<[u8; 32]>, StoreError> {
        let txn = self.db.begin_read()?;
        let versions = txn.open_table(MODEL_VERSIONS)?;
        versions
            .iter()?
            .map(|entry| {
                let (_, value) = entry?;
                let VersionRecord::V1 { sha256, .. } = decode(value.value(), "model_versions")?;
                Ok(sha256)
            })
            .collect()
    }

    /// The deployment of a model.
    ///
    /// # Errors
    /// I/O failure or a damaged record.
    pub fn deployment(&self, name: &str) -> Result<Option<DeploymentRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(DEPLOYMENTS)?;
        table
            .get(name)?
            .map(|raw| decode(raw.value(), "deployments"))
            .transpose()
    }

    /// Every deployment, by model name.
    ///
    /// # Errors
    /// I/O failure or a damaged record.
    pub fn list_deployments(&self) -> Result<Vec<(String, DeploymentRecord)>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(DEPLOYMENTS)?;
        table
            .iter()?
            .map(|entry| {
                let (key, value) = entry?;
                Ok((
                    key.value().to_owned(),
                    decode(value.value(), "deployments")?,
                ))
            })
            .collect()
    }

    /// Records (or, with `None`, removes) the deployment of a model, durably. The version
    /// must exist and be ready.
    ///
    /// # Errors
    /// `NotFound` for a missing model or version, `InUse` for an invalid version; I/O failure.
    pub fn put_deployment(
        &self,
        name: &str,
        record: Option<&DeploymentRecord>,
    ) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            if txn.open_table(MODELS)?.get(name)?.is_none() {
                return Err(StoreError::NotFound(format!("model {name}")));
            }
            let mut table = txn.open_table(DEPLOYMENTS)?;
            match record {
                Some(record) => {
                    let current = record.clone().latest().current;
                    let versions = txn.open_table(MODEL_VERSIONS)?;
                    let Some(raw) = versions.get((name, current.version))? else {
                        return Err(StoreError::NotFound(format!(
                            "version {} of {name}",
                            current.version
                        )));
                    };
                    let VersionRecord::V1 { invalid, .. } = decode(raw.value(), "model_versions")?;
                    if let Some(reason) = invalid {
                        return Err(StoreError::InUse(format!(
                            "version {} of {name} is invalid ({reason}) and cannot be deployed",
                            current.version
                        )));
                    }
                    table.insert(name, encode(record).as_slice())?;
                }
                None => {
                    table.remove(name)?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Whether the demo model was installed once on this store.
    ///
    /// # Errors
    /// I/O failure.
    pub fn demo_model_done(&self) -> Result<bool, StoreError> {
        let txn = self.db.begin_read()?;
        Ok(txn
            .open_table(META)?
            .get(meta_key::DEMO_MODEL_DONE)?
            .is_some())
    }

    /// Marks the demo model as installed.
    ///
    /// # Errors
    /// I/O failure.
    pub fn set_demo_model_done(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        txn.open_table(META)?
            .insert(meta_key::DEMO_MODEL_DONE, [1u8].as_slice())?;
        txn.commit()?;
        Ok(())
    }
}

/// Of `candidates`, the blobs no remaining version refers to.
fn unreferenced(
    versions: &redb::Table<(&str, u32), &[u8]>,
    mut candidates: Vec<[u8; 32]>,
) -> Result<Vec<[u8; 32]>, StoreError> {
    candidates.sort_unstable();
    candidates.dedup();
    if candidates.is_empty() {
        return Ok(candidates);
    }
    for entry in versions.iter()? {
        let (_, value) = entry?;
        let VersionRecord::V1 { sha256, .. } = decode(value.value(), "model_versions")?;
        candidates.retain(|c| *c != sha256);
        if candidates.is_empty() {
            break;
        }
    }
    Ok(candidates)
}
