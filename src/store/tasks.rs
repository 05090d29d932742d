//! Stored tasks and schedules: the only redb code of the scheduler.
//!
//! Every change the scheduler makes goes through [`Store::apply_task_writes`]: one write
//! transaction for a whole group of changes (group commit), each change covering the task
//! record and every index table it appears in.

use std::collections::BTreeSet;

use redb::{Durability, ReadableDatabase, ReadableTable, WriteTransaction};

use super::schema::{
    META, SCHEDULES, ScheduleRecord, TASK_KEYS, TASKS, TASKS_BY_STATUS, TaskRecord, encode,
    meta_key,
};
use super::{Store, StoreError, decode};

/// One change, applied inside a group transaction.
#[derive(Debug, Clone)]
pub enum TaskWrite {
    /// Inserts or replaces a task; its status index entry moves with it. A new task with an
    /// idempotency key claims the key (a key already taken fails the transaction).
    Put {
        id: u64,
        record: TaskRecord,
        new: bool,
    },
    /// Deletes a task, its index entry and its idempotency key.
    Delete {
        id: u64,
    },
    PutSchedule {
        id: u64,
        record: ScheduleRecord,
    },
    DeleteSchedule {
        id: u64,
    },
    /// Raises the stored id counters to at least these values.
    NextIds {
        task: u64,
        schedule: u64,
    },
}

/// What the scheduler reads at start.
#[derive(Debug, Default)]
pub struct LoadedTasks {
    /// Every unfinished task (queued, scheduled, waiting, running, paused).
    pub active: Vec<(u64, TaskRecord)>,
    /// Every finished task: (id, status, finished unix ms).
    pub finished: Vec<(u64, u8, u64)>,
    /// Every idempotency key.
    pub keys: Vec<(String, u64)>,
    pub next_task_id: u64,
    pub next_schedule_id: u64,
}

/// A page query over tasks, newest first.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    pub statuses: Vec<u8>,
    pub kind: Option<String>,
    pub priority: Option<u8>,
    pub created_after_ms: Option<u64>,
    pub created_before_ms: Option<u64>,
    /// Only ids below this one (the cursor of the previous page).
    pub before_id: Option<u64>,
    pub limit: usize,
}

/// A page of tasks and the cursor of the next page.
pub type TaskPage = (Vec<(u64, TaskRecord)>, Option<u64>);

/// The highest status code of an unfinished task.
const LAST_ACTIVE_STATUS: u8 = 4;
/// At most this many records are examined for one page, so a filter that matches
/// nothing cannot make a request scan the whole table.
const MAX_SCAN: usize = 20_000;

fn status_of(record: &TaskRecord) -> u8 {
    let TaskRecord::V1 { status, .. } = record;
    *status
}

fn changed_ms(record: &TaskRecord) -> u64 {
    let TaskRecord::V1 {
        finished_ms,
        created_ms,
        enqueued_ms,
        ..
    } = record;
    finished_ms.unwrap_or((*enqueued_ms).max(*created_ms))
}

fn read_u64(raw: &[u8], what: &str) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = raw
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("meta.{what} is not 8 bytes")))?;
    Ok(u64::from_le_bytes(bytes))
}

fn apply_one(txn: &WriteTransaction, write: &TaskWrite) -> Result<(), StoreError> {
    match write {
        TaskWrite::Put { id, record, new } => {
            let mut tasks = txn.open_table(TASKS)?;
            let mut index = txn.open_table(TASKS_BY_STATUS)?;
            if *new {
                let TaskRecord::V1 {
                    idempotency_key, ..
                } = record;
                if let Some(key) = idempotency_key {
                    let mut keys = txn.open_table(TASK_KEYS)?;
                    if keys.insert(key.as_str(), *id)?.is_some() {
                        return Err(StoreError::Conflict(format!("idempotency key {key}")));
                    }
                }
            } else if let Some(old) = tasks.get(*id)? {
                let old: TaskRecord = decode(old.value(), "tasks")?;
                index.remove((status_of(&old), *id))?;
            }
            tasks.insert(*id, encode(record).as_slice())?;
            index.insert((status_of(record), *id), changed_ms(record))?;
        }
        TaskWrite::Delete { id } => {
            let mut tasks = txn.open_table(TASKS)?;
            let Some(old) = tasks.remove(*id)? else {
                return Ok(());
            };
            let old: TaskRecord = decode(old.value(), "tasks")?;
            txn.open_table(TASKS_BY_STATUS)?
                .remove((status_of(&old), *id))?;
            let TaskRecord::V1 {
                idempotency_key, ..
            } = old;
            if let Some(key) = idempotency_key {
                txn.open_table(TASK_KEYS)?.remove(key.as_str())?;
            }
        }
        TaskWrite::PutSchedule { id, record } => {
            txn.open_table(SCHEDULES)?
                .insert(*id, encode(record).as_slice())?;
        }
        TaskWrite::DeleteSchedule { id } => {
            txn.open_table(SCHEDULES)?.remove(*id)?;
        }
        TaskWrite::NextIds { task, schedule } => {
            let mut meta = txn.open_table(META)?;
            for (key, value) in [
                (meta_key::NEXT_TASK_ID, *task),
                (meta_key::NEXT_SCHEDULE_ID, *schedule),
            ] {
                let current = match meta.get(key)? {
                    Some(raw) => read_u64(raw.value(), key)?,
                    None => 1,
                };
                if value > current {
                    meta.insert(key, value.to_le_bytes().as_slice())?;
                }
            }
        }
    }
    Ok(())
}

impl Store {
    /// Applies a group of changes in one write transaction. `durable`: the commit is on
    /// disk when this returns (`Durability::Immediate`); otherwise it is visible at once and
    /// made durable by the next durable commit.
    ///
    /// # Errors
    /// Any change fails (the whole group is then rolled back); I/O failure.
    pub fn apply_task_writes<'a>(
        &self,
        writes: impl IntoIterator<Item = &'a TaskWrite>,
        durable: bool,
    ) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(if durable {
            Durability::Immediate
        } else {
            Durability::None
        })?;
        for write in writes {
            apply_one(&txn, write)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Everything the scheduler needs at start.
    ///
    /// # Errors
    /// I/O failure or a damaged record.
    pub fn load_tasks(&self) -> Result<LoadedTasks, StoreError> {
        let txn = self.db.begin_read()?;
        let tasks = txn.open_table(TASKS)?;
        let index = txn.open_table(TASKS_BY_STATUS)?;
        let mut loaded = LoadedTasks::default();
        for entry in index.iter()? {
            let (key, changed) = entry?;
            let (status, id) = key.value();
            if status <= LAST_ACTIVE_STATUS {
                let raw = tasks.get(id)?.ok_or_else(|| {
                    StoreError::Corrupt(format!("task {id} is indexed but missing"))
                })?;
                loaded.active.push((id, decode(raw.value(), "tasks")?));
            } else {
                loaded.finished.push((id, status, changed.value()));
            }
        }
        loaded.active.sort_by_key(|(id, _)| *id);
        loaded.finished.sort_by_key(|(id, _, _)| *id);
        for entry in txn.open_table(TASK_KEYS)?.iter()? {
            let (key, id) = entry?;
            loaded.keys.push((key.value().to_owned(), id.value()));
        }
        let meta = txn.open_table(META)?;
        loaded.next_task_id = match meta.get(meta_key::NEXT_TASK_ID)? {
            Some(raw) => read_u64(raw.value(), meta_key::NEXT_TASK_ID)?,
            None => 1,
        };
        loaded.next_schedule_id = match meta.get(meta_key::NEXT_SCHEDULE_ID)? {
            Some(raw) => read_u64(raw.value(), meta_key::NEXT_SCHEDULE_ID)?,
            None => 1,
        };
        // Ids are never reused, even when the counter was written less often than tasks.
        if let Some(last) = tasks.last()? {
            loaded.next_task_id = loaded.next_task_id.max(last.0.value() + 1);
        }
        if let Some(last) = txn.open_table(SCHEDULES)?.last()? {
            loaded.next_schedule_id = loaded.next_schedule_id.max(last.0.value() + 1);
        }
        Ok(loaded)
    }

    /// One task.
    ///
    /// # Errors
    /// I/O failure or a damaged record.
    pub fn task(&self, id: u64) -> Result<Option<TaskRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let tasks = txn.open_table(TASKS)?;
        tasks
            .get(id)?
            .map(|raw| decode(raw.value(), "tasks"))
            .transpose()
    }

    /// A page of tasks, newest first, and the cursor of the next page.
    ///
    /// # Errors
    /// I/O failure or a damaged record.
    pub fn list_tasks(&self, filter: &TaskFilter) -> Result<TaskPage, StoreError> {
        let txn = self.db.begin_read()?;
        let tasks = txn.open_table(TASKS)?;
        let limit = filter.limit.max(1);
        let before = filter.before_id.unwrap_or(u64::MAX);
        let matches = |record: &TaskRecord| {
            let TaskRecord::V1 {
                kind,
                priority,
                created_ms,
                ..
            } = record;
            filter.kind.as_ref().is_none_or(|k| k == kind)
                && filter.priority.is_none_or(|p| p == *priority)
                && filter.created_after_ms.is_none_or(|t| *created_ms >= t)
                && filter.created_before_ms.is_none_or(|t| *created_ms < t)
        };
        let mut page = Vec::new();
        let mut scanned = 0usize;
        let mut last_seen = None;
        let mut ids: Vec<u64> = Vec::new();
        if filter.statuses.is_empty() {
            for entry in tasks.range(..before)?.rev() {
                let (id, raw) = entry?;
                let record: TaskRecord = decode(raw.value(), "tasks")?;
                last_seen = Some(id.value());
                scanned += 1;
                if matches(&record) {
                    page.push((id.value(), record));
                }
                if page.len() >= limit || scanned >= MAX_SCAN {
                    break;
                }
            }
        } else {
            // Ids from each status's index, merged newest first.
            let index = txn.open_table(TASKS_BY_STATUS)?;
            let mut merged = BTreeSet::new();
            for status in &filter.statuses {
                for entry in index
                    .range((*status, 0)..(*status, before))?
                    .rev()
                    .take(MAX_SCAN)
                {
                    merged.insert(entry?.0.value().1);
                }
            }
            ids.extend(merged.into_iter().rev());
        }
        for id in ids {
            last_seen = Some(id);
            scanned += 1;
            if let Some(raw) = tasks.get(id)? {
                let record: TaskRecord = decode(raw.value(), "tasks")?;
                if matches(&record) {
                    page.push((id, record));
                }
            }
            if page.len() >= limit || scanned >= MAX_SCAN {
                break;
            }
        }
        let more = page.len() >= limit || scanned >= MAX_SCAN;
        Ok((page, if more { last_seen } else { None }))
    }

    /// Every schedule, by id.
    ///
    /// # Errors
    /// I/O failure or a damaged record.
    pub fn schedules(&self) -> Result<Vec<(u64, ScheduleRecord)>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(SCHEDULES)?;
        table
            .iter()?
            .map(|entry| {
                let (id, raw) = entry?;
                Ok((id.value(), decode(raw.value(), "schedules")?))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::store::STORE_FILE;

    pub(crate) fn record(status: u8, key: Option<&str>) -> TaskRecord {
        TaskRecord::V1 {
            kind: "system.sleep".into(),
            payload: "{}".into(),
            priority: 5,
            status,
            creator: "t".into(),
            created_ms: 10,
            run_at_ms: None,
            enqueued_ms: 10,
            started_ms: None,
            finished_ms: (status > LAST_ACTIVE_STATUS).then_some(20),
            attempts: 0,
            max_attempts: 3,
            retry_base: 0,
            errors: Vec::new(),
            progress: 0,
            progress_message: String::new(),
            result: None,
            depends_on: Vec::new(),
            idempotency_key: key.map(str::to_owned),
            soft_limit_ms: 1000,
            hard_limit_ms: 2000,
            schedule: None,
            reason: None,
            cancel_requested: false,
        }
    }

    #[test]
    fn a_status_change_moves_the_index_entry() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join(STORE_FILE)).unwrap();
        store
            .apply_task_writes(
                &[
                    TaskWrite::Put {
                        id: 1,
                        record: record(0, Some("k")),
                        new: true,
                    },
                    TaskWrite::Put {
                        id: 2,
                        record: record(0, None),
                        new: true,
                    },
                    TaskWrite::NextIds {
                        task: 3,
                        schedule: 1,
                    },
                ],
                true,
            )
            .unwrap();
        store
            .apply_task_writes(
                &[TaskWrite::Put {
                    id: 1,
                    record: record(5, Some("k")),
                    new: false,
                }],
                false,
            )
            .unwrap();
        let loaded = store.load_tasks().unwrap();
        assert_eq!(loaded.active.len(), 1);
        assert_eq!(loaded.finished, vec![(1, 5, 20)]);
        assert_eq!(loaded.keys, vec![("k".to_owned(), 1)]);
        assert_eq!(loaded.next_task_id, 3);
        // A second task with the same key is refused, and the whole group with it.
        let err = store
            .apply_task_writes(
                &[
                    TaskWrite::Put {
                        id: 3,
                        record: record(0, None),
                        new: true,
                    },
                    TaskWrite::Put {
                        id: 4,
                        record: record(0, Some("k")),
                        new: true,
                    },
                ],
                true,
            )
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err}");
        assert!(store.task(3).unwrap().is_none());
        store
            .apply_task_writes(&[TaskWrite::Delete { id: 1 }], true)
            .unwrap();
        let loaded = store.load_tasks().unwrap();
        assert!(loaded.finished.is_empty() && loaded.keys.is_empty());
    }

    #[test]
    fn pages_run_newest_first_with_filters() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join(STORE_FILE)).unwrap();
        let writes: Vec<TaskWrite> = (1..=10)
            .map(|id| TaskWrite::Put {
                id,
                record: record(if id % 2 == 0 { 5 } else { 0 }, None),
                new: true,
            })
            .collect();
        store.apply_task_writes(&writes, true).unwrap();
        let (page, cursor) = store
            .list_tasks(&TaskFilter {
                limit: 3,
                ..TaskFilter::default()
            })
            .unwrap();
        assert_eq!(
            page.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            [10, 9, 8]
        );
        let (page, _) = store
            .list_tasks(&TaskFilter {
                limit: 3,
                before_id: cursor,
                statuses: vec![5],
                ..TaskFilter::default()
            })
            .unwrap();
        assert_eq!(
            page.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            [6, 4, 2]
        );
    }

    #[test]
    fn compaction_gives_space_back_in_place_and_waits_for_readers() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join(STORE_FILE)).unwrap();
        let big = |id: u64| TaskWrite::Put {
            id,
            record: record_with_result(64 * 1024),
            new: true,
        };
        let writes: Vec<TaskWrite> = (1..=300).map(big).collect();
        store.apply_task_writes(&writes, true).unwrap();
        let deletes: Vec<TaskWrite> = (2..=300).map(|id| TaskWrite::Delete { id }).collect();
        store.apply_task_writes(&deletes, true).unwrap();
        let full = store.file_size();
        assert!(full > 10 << 20, "{full}");

        // An open read holds it off, with a clear error once the wait is over.
        let reading = store.db.begin_read().unwrap();
        let err = store.compact(Duration::from_millis(50)).unwrap_err();
        assert!(
            matches!(err, StoreError::InUse(ref m) if m.contains("busy")),
            "{err}"
        );
        drop(reading);

        // A writer at the same moment goes first or waits for it; nothing is lost.
        let writer = {
            let store = Arc::new(store);
            let compactor = Arc::clone(&store);
            let compaction =
                std::thread::spawn(move || compactor.compact(Duration::from_secs(5)).unwrap());
            store.apply_task_writes(&[big(1000)], true).unwrap();
            let (before, after) = compaction.join().unwrap();
            assert_eq!(before, full);
            assert!(after < full / 4, "{after} of {full}");
            store
        };
        let kept = writer.task(1).unwrap().expect("a live task survives");
        assert_eq!(kept, record_with_result(64 * 1024));
        assert!(writer.task(1000).unwrap().is_some());
        assert!(writer.task(2).unwrap().is_none());
        let (_, again) = writer.compact(Duration::from_secs(5)).unwrap();
        assert!(again <= writer.file_size());
    }

    fn record_with_result(len: usize) -> TaskRecord {
        let mut r = record(5, None);
        let TaskRecord::V1 { result, .. } = &mut r;
        *result = Some("x".repeat(len));
        r
    }
}
