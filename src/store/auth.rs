//! Stored identity and access: users, sessions, API keys, key usage, the audit log.

use redb::{Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata};

use super::schema::{
    API_KEYS, AUDIT, AuditRecord, KEY_USAGE, KeyRecord, META, SESSIONS, SessionRecord, USERNAMES,
    USERS, UsageRecord, UserRecord, encode, meta_key,
};
use super::{Store, StoreError, decode};

/// A user as stored, with its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredUser {
    pub id: u64,
    pub record: UserRecord,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub id: u64,
    pub record: KeyRecord,
}

/// Filters for reading the audit log, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub kind: Option<String>,
    pub actor: Option<String>,
    pub since_ms: Option<u64>,
    pub until_ms: Option<u64>,
    /// Only entries with a sequence number below this (paging cursor).
    pub before_seq: Option<u64>,
    pub limit: usize,
}

impl Store {
    /// The HMAC key for API key secrets.
    ///
    /// # Errors
    /// I/O failure or a damaged store.
    pub fn server_secret(&self) -> Result<Vec<u8>, StoreError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        let secret = meta
            .get(meta_key::SERVER_SECRET)?
            .ok_or_else(|| StoreError::Corrupt("meta.server_secret is missing".into()))?;
        Ok(secret.value().to_vec())
    }

    /// Creates a user; the username must be free.
    ///
    /// # Errors
    /// `Conflict` when the username is taken; I/O failure.
    pub fn create_user(&self, record: &UserRecord) -> Result<u64, StoreError> {
        let UserRecord::V1 { username, .. } = record;
        let txn = self.db.begin_write()?;
        let id = {
            let mut names = txn.open_table(USERNAMES)?;
            if names.get(username.as_str())?.is_some() {
                return Err(StoreError::Conflict(format!("user {username}")));
            }
            let mut meta = txn.open_table(META)?;
            let id = match meta.get(meta_key::NEXT_USER_ID)? {
                Some(raw) => u64::from_le_bytes(
                    raw.value()
                        .try_into()
                        .map_err(|_| StoreError::Corrupt("meta.next_user_id".into()))?,
                ),
                None => 1,
            };
            meta.insert(meta_key::NEXT_USER_ID, (id + 1).to_le_bytes().as_slice())?;
            names.insert(username.as_str(), id)?;
            txn.open_table(USERS)?
                .insert(id, encode(record).as_slice())?;
            id
        };
        txn.commit()?;
        Ok(id)
    }

    /// # Errors
    /// I/O failure or a damaged record.
    pub fn user(&self, id: u64) -> Result<Option<StoredUser>, StoreError> {
        let txn = self.db.begin_read()?;
        let users = txn.open_table(USERS)?;
        users
            .get(id)?
            .map(|raw| {
                Ok(StoredUser {
                    id,
                    record: decode(raw.value(), "users")?,
                })
            })
            .transpose()
    }

    /// # Errors
    /// I/O failure or a damaged record.
    pub fn user_by_name(&self, username: &str) -> Result<Option<StoredUser>, StoreError> {
        let id = {
            let txn = self.db.begin_read()?;
            let names = txn.open_table(USERNAMES)?;
            names.get(username)?.map(|v| v.value())
        };
        match id {
            Some(id) => self.user(id),
            None => Ok(None),
        }
    }

    /// Every user, by id.
    ///
    /// # Errors
    /// I/O failure or a damaged record.
    pub fn list_users(&self) -> Result<Vec<StoredUser>, StoreError> {
        let txn = self.db.begin_read()?;
        let users = txn.open_table(USERS)?;
        let mut out = Vec::new();
        for entry in users.iter()? {
            let (id, raw) = entry?;
            out.push(StoredUser {
                id: id.value(),
                record: decode(raw.value(), "users")?,
            });
        }
        Ok(out)
    }

    /// Replaces a user's record (the username cannot change).
    ///
    /// # Errors
    /// `NotFound`; I/O failure.
    pub fn put_user(&self, id: u64, record: &UserRecord) -> Result<(), StoreError> {
        self.put_user_guarded(id, record, |_, _| Ok(()))
    }

    /// Replaces a user's record if `guard` accepts the change: it sees the record as it is
    /// inside the write transaction and every user as they would be after it, so a rule
    /// across users (an enabled admin remains) holds against concurrent changes.
    ///
    /// # Errors
    /// `NotFound`; whatever `guard` returns; I/O failure.
    pub fn put_user_guarded(
        &self,
        id: u64,
        record: &UserRecord,
        guard: impl FnOnce(&UserRecord, &[StoredUser]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let mut users = txn.open_table(USERS)?;
            let old: UserRecord = match users.get(id)? {
                Some(raw) => decode(raw.value(), "users")?,
                None => return Err(StoreError::NotFound(format!("user {id}"))),
            };
            let mut after = all_users(&users)?;
            for user in &mut after {
                if user.id == id {
                    user.record = record.clone();
                }
            }
            guard(&old, &after)?;
            users.insert(id, encode(record).as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Deletes a user with their sessions; their keys are revoked (kept for the audit trail).
    ///
    /// # Errors
    /// `NotFound`; I/O failure.
    pub fn delete_user(&self, id: u64, now: u64) -> Result<StoredUser, StoreError> {
        self.delete_user_guarded(id, now, |_, _| Ok(()))
    }

    /// [`Store::delete_user`] if `guard` accepts it, given the record inside the write
    /// transaction and the users that remain.
    ///
    /// # Errors
    /// `NotFound`; whatever `guard` returns; I/O failure.
    pub fn delete_user_guarded(
        &self,
        id: u64,
        now: u64,
        guard: impl FnOnce(&UserRecord, &[StoredUser]) -> Result<(), StoreError>,
    ) -> Result<StoredUser, StoreError> {
        let txn = self.db.begin_write()?;
        let user = {
            let mut users = txn.open_table(USERS)?;
            let record: UserRecord = match users.remove(id)? {
                Some(raw) => decode(raw.value(), "users")?,
                None => return Err(StoreError::NotFound(format!("user {id}"))),
            };
            guard(&record, &all_users(&users)?)?;
            let UserRecord::V1 { username, .. } = &record;
            txn.open_table(USERNAMES)?.remove(username.as_str())?;
            delete_sessions_where(&txn, |s| session_user(s) == id)?;
            let mut keys = txn.open_table(API_KEYS)?;
            let owned: Vec<(u64, KeyRecord)> = keys
                .iter()?
                .filter_map(Result::ok)
                .filter_map(|(k, v)| {
                    decode::<KeyRecord>(v.value(), "api_keys")
                        .ok()
                        .map(|r| (k.value(), r))
                })
                .filter(|(_, r)| key_user(r) == id)
                .collect();
            for (key_id, mut record) in owned {
                let KeyRecord::V1 { revoked_at, .. } = &mut record;
                revoked_at.get_or_insert(now);
                keys.insert(key_id, encode(&record).as_slice())?;
            }
            StoredUser { id, record }
        };
        txn.commit()?;
        Ok(user)
    }

    /// Records that the environment-provided admin was created (it is created only once).
    ///
    /// # Errors
    /// I/O failure.
    pub fn mark_env_admin_done(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        txn.open_table(META)?
            .insert(meta_key::ENV_ADMIN_DONE, [1u8].as_slice())?;
        txn.commit()?;
        Ok(())
    }

    /// # Errors
    /// I/O failure.
    pub fn env_admin_done(&self) -> Result<bool, StoreError> {
        let txn = self.db.begin_read()?;
        Ok(txn
            .open_table(META)?
            .get(meta_key::ENV_ADMIN_DONE)?
            .is_some())
    }

    /// # Errors
    /// I/O failure.
    pub fn put_session(
        &self,
        token_hash: &[u8; 32],
        record: &SessionRecord,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        txn.open_table(SESSIONS)?
            .insert(token_hash.as_slice(), encode(record).as_slice())?;
        txn.commit()?;
        Ok(())
    }

    /// # Errors
    /// I/O failure or a damaged record.
    pub fn session(&self, token_hash: &[u8; 32]) -> Result<Option<SessionRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let sessions = txn.open_table(SESSIONS)?;
        sessions
            .get(token_hash.as_slice())?
            .map(|raw| decode(raw.value(), "sessions"))
            .transpose()
    }

    /// Updates `last_seen` without an fsync: losing a touch in a crash only shortens a session.
    ///
    /// # Errors
    /// I/O failure.
    pub fn touch_session(
        &self,
        token_hash: &[u8; 32],
        record: &SessionRecord,
    ) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::None)?;
        {
            let mut sessions = txn.open_table(SESSIONS)?;
            // Only if it still exists: a concurrent logout wins.
            if sessions.get(token_hash.as_slice())?.is_some() {
                sessions.insert(token_hash.as_slice(), encode(record).as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// # Errors
    /// I/O failure.
    pub fn delete_session(&self, token_hash: &[u8; 32]) -> Result<bool, StoreError> {
        let txn = self.db.begin_write()?;
        let existed = txn
            .open_table(SESSIONS)?
            .remove(token_hash.as_slice())?
            .is_some();
        txn.commit()?;
        Ok(existed)
    }

    /// Ends every session of `user_id` except `keep`. Returns how many ended.
    ///
    /// # Errors
    /// I/O failure.
    pub fn delete_user_sessions(
        &self,
        user_id: u64,
        keep: Option<&[u8; 32]>,
    ) -> Result<usize, StoreError> {
        let keep = keep.map(|k| k.to_vec());
        let txn = self.db.begin_write()?;
        let ended = {
            let mut sessions = txn.open_table(SESSIONS)?;
            let doomed: Vec<Vec<u8>> = sessions
                .iter()?
                .filter_map(Result::ok)
                .filter(|(k, v)| {
                    keep.as_deref() != Some(k.value())
                        && decode::<SessionRecord>(v.value(), "sessions")
                            .is_ok_and(|s| session_user(&s) == user_id)
                })
                .map(|(k, _)| k.value().to_vec())
                .collect();
            for hash in &doomed {
                sessions.remove(hash.as_slice())?;
            }
            doomed.len()
        };
        txn.commit()?;
        Ok(ended)
    }

    /// Removes sessions whose `last_seen` is before `idle_cutoff` or `created_at` before
    /// `absolute_cutoff`. Returns how many.
    ///
    /// # Errors
    /// I/O failure.
    pub fn prune_sessions(
        &self,
        idle_cutoff: u64,
        absolute_cutoff: u64,
    ) -> Result<usize, StoreError> {
        let txn = self.db.begin_write()?;
        let removed = delete_sessions_where(&txn, |s| {
            let SessionRecord::V1 {
                created_at,
                last_seen,
                ..
            } = s;
            *last_seen < idle_cutoff || *created_at < absolute_cutoff
        })?;
        txn.commit()?;
        Ok(removed)
    }

    /// # Errors
    /// `Conflict` when the id is taken (a 2^-64 event); I/O failure.
    pub fn create_key(&self, id: u64, record: &KeyRecord) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let mut keys = txn.open_table(API_KEYS)?;
            if keys.get(id)?.is_some() {
                return Err(StoreError::Conflict(format!("key {id:016x}")));
            }
            keys.insert(id, encode(record).as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    /// # Errors
    /// `NotFound`; I/O failure.
    pub fn put_key(&self, id: u64, record: &KeyRecord) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let mut keys = txn.open_table(API_KEYS)?;
            if keys.get(id)?.is_none() {
                return Err(StoreError::NotFound(format!("key {id:016x}")));
            }
            keys.insert(id, encode(record).as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Every API key, by id.
    ///
    /// # Errors
    /// I/O failure or a damaged record.
    pub fn list_keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        let txn = self.db.begin_read()?;
        let keys = txn.open_table(API_KEYS)?;
        let mut out = Vec::new();
        for entry in keys.iter()? {
            let (id, raw) = entry?;
            out.push(StoredKey {
                id: id.value(),
                record: decode(raw.value(), "api_keys")?,
            });
        }
        Ok(out)
    }

    /// Usage counters of every key that has some.
    ///
    /// # Errors
    /// I/O failure or a damaged record.
    pub fn key_usage(&self) -> Result<Vec<(u64, UsageRecord)>, StoreError> {
        let txn = self.db.begin_read()?;
        let usage = txn.open_table(KEY_USAGE)?;
        let mut out = Vec::new();
        for entry in usage.iter()? {
            let (id, raw) = entry?;
            out.push((id.value(), decode(raw.value(), "key_usage")?));
        }
        Ok(out)
    }

    /// Writes usage counters (periodically, and at shutdown).
    ///
    /// # Errors
    /// I/O failure.
    pub fn put_key_usage(&self, usage: &[(u64, UsageRecord)]) -> Result<(), StoreError> {
        if usage.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(KEY_USAGE)?;
            for (id, record) in usage {
                table.insert(*id, encode(record).as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Appends audit entries in one transaction; returns the last sequence number.
    ///
    /// # Errors
    /// I/O failure.
    pub fn append_audit(&self, records: &[AuditRecord]) -> Result<u64, StoreError> {
        let txn = self.db.begin_write()?;
        let last = {
            let mut audit = txn.open_table(AUDIT)?;
            let mut next = audit.last()?.map_or(1, |(k, _)| k.value() + 1);
            for record in records {
                audit.insert(next, encode(record).as_slice())?;
                next += 1;
            }
            next - 1
        };
        txn.commit()?;
        Ok(last)
    }

    /// Drops audit entries older than `before_ms`, and the oldest beyond `max_entries`.
    ///
    /// # Errors
    /// I/O failure.
    pub fn prune_audit(&self, before_ms: u64, max_entries: u64) -> Result<u64, StoreError> {
        let txn = self.db.begin_write()?;
        let removed = {
            let mut audit = txn.open_table(AUDIT)?;
            let mut excess = audit.len()?.saturating_sub(max_entries);
            let mut doomed = Vec::new();
            for entry in audit.iter()? {
                let (seq, raw) = entry?;
                let AuditRecord::V1 { at_ms, .. } = decode(raw.value(), "audit")?;
                if excess > 0 || at_ms < before_ms {
                    doomed.push(seq.value());
                    excess = excess.saturating_sub(1);
                } else {
                    break;
                }
            }
            for seq in &doomed {
                audit.remove(*seq)?;
            }
            doomed.len() as u64
        };
        txn.commit()?;
        Ok(removed)
    }

    /// Reads audit entries, newest first, with their sequence numbers.
    ///
    /// # Errors
    /// I/O failure or a damaged record.
    pub fn query_audit(&self, query: &AuditQuery) -> Result<Vec<(u64, AuditRecord)>, StoreError> {
        let txn = self.db.begin_read()?;
        let audit = txn.open_table(AUDIT)?;
        let mut out = Vec::new();
        let upper = query.before_seq.unwrap_or(u64::MAX);
        for entry in audit.range(..upper)?.rev() {
            let (seq, raw) = entry?;
            let record: AuditRecord = decode(raw.value(), "audit")?;
            let AuditRecord::V1 {
                at_ms, kind, actor, ..
            } = &record;
            if query.since_ms.is_some_and(|s| *at_ms < s) {
                break;
            }
            if query.until_ms.is_some_and(|u| *at_ms > u)
                || query.kind.as_ref().is_some_and(|k| k != kind)
                || query.actor.as_ref().is_some_and(|a| a != actor)
            {
                continue;
            }
            out.push((seq.value(), record));
            if out.len() >= query.limit {
                break;
            }
        }
        Ok(out)
    }
}

fn all_users(
    users: &impl ReadableTable<u64, &'static [u8]>,
) -> Result<Vec<StoredUser>, StoreError> {
    let mut out = Vec::new();
    for entry in users.iter()? {
        let (id, raw) = entry?;
        out.push(StoredUser {
            id: id.value(),
            record: decode(raw.value(), "users")?,
        });
    }
    Ok(out)
}

fn session_user(record: &SessionRecord) -> u64 {
    let SessionRecord::V1 { user_id, .. } = record;
    *user_id
}

fn key_user(record: &KeyRecord) -> u64 {
    let KeyRecord::V1 { user_id, .. } = record;
    *user_id
}

fn delete_sessions_where(
    txn: &redb::WriteTransaction,
    doomed: impl Fn(&SessionRecord) -> bool,
) -> Result<usize, StoreError> {
    let mut sessions = txn.open_table(SESSIONS)?;
    let hashes: Vec<Vec<u8>> = sessions
        .iter()?
        .filter_map(Result::ok)
        .filter(|(_, v)| decode::<SessionRecord>(v.value(), "sessions").is_ok_and(|s| doomed(&s)))
        .map(|(k, _)| k.value().to_vec())
        .collect();
    for hash in &hashes {
        sessions.remove(hash.as_slice())?;
    }
    Ok(hashes.len())
}
