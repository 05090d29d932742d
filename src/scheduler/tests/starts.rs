//! A task that can start with its submission: written `running` in that commit, and
//! with run-ahead, begun before it (one commit for a short task's whole round trip).

use tokio::sync::oneshot;

use super::super::core::Effect;
use super::super::kinds::Kind;
use super::super::model::Status;
use super::super::views::TaskView;
use super::super::{SchedulerConfig, TaskError};
use super::{Bench, config, restart, sleep, store, task};

#[test]
fn a_task_with_a_free_worker_starts_in_its_submission_commit() {
    let (_dir, store) = store();
    let mut b = restart(&store, config(), 0);
    let (reply, mut answer) = oneshot::channel();
    b.core.submit(vec![task(sleep(), 5)], "tester", reply, 0);
    let (batch, effects) = b.core.take_output();
    assert!(
        !effects.iter().any(|e| matches!(e, Effect::Start { .. })),
        "an attempt began before its submission committed"
    );
    assert!(batch.durable);
    store.apply_task_writes(&batch.writes, true).unwrap();
    b.core.committed(&Ok(()), batch.acks, 0);
    let id = answer.try_recv().unwrap().unwrap()[0];
    let stored = TaskView::from_record(id, &store.task(id).unwrap().unwrap());
    assert_eq!((stored.status, stored.attempts), (Status::Running, 1));
    b.step(0);
    assert_eq!(b.started, [(id, 1)]);

    // The one worker is busy: the next task queues, and starts when the worker is free.
    let second = b.one(task(sleep(), 5), 1);
    assert_eq!(b.status(second), Status::Queued);
    b.done(id, Ok("{}"), 2);
    assert_eq!(b.started_ids(), [id, second]);

    // A submission whose commit fails leaves nothing behind: no task, no busy worker.
    let mut b = Bench::new(config());
    let (reply, mut answer) = oneshot::channel();
    b.core.submit(vec![task(sleep(), 5)], "tester", reply, 0);
    let (batch, _) = b.core.take_output();
    b.core.committed(&Err("disk full".into()), batch.acks, 0);
    assert!(matches!(
        answer.try_recv().unwrap(),
        Err(TaskError::Store(_))
    ));
    assert!(b.core.running.is_empty() && b.core.tasks.is_empty());
    assert_eq!(b.core.running_by_kind.iter().sum::<usize>(), 0);
    let id = b.one(task(sleep(), 5), 1);
    assert_eq!(b.started, [(id, 1)]);
}

#[test]
fn an_attempt_runs_ahead_of_its_submission_and_a_short_one_shares_its_commit() {
    let (_dir, store) = store();
    let cfg = SchedulerConfig {
        run_ahead_ms: 2,
        ..config()
    };
    let mut b = restart(&store, cfg.clone(), 0);
    let commit = |b: &mut Bench, now| {
        let (batch, effects) = b.core.take_output();
        store
            .apply_task_writes(&batch.writes, batch.durable)
            .unwrap();
        b.core.committed(&Ok(()), batch.acks, now);
        (batch.durable, batch.writes.len(), effects)
    };

    // Starts at once: the attempt begins, the submission is held, nothing is answered.
    let (reply, mut answer) = oneshot::channel();
    b.core.submit(vec![task(sleep(), 5)], "tester", reply, 0);
    let (batch, effects) = b.core.take_output();
    assert!(batch.is_empty(), "the submission is held");
    let Some(Effect::Start { id, attempt, .. }) = effects.first() else {
        panic!("the attempt begins at once: {effects:?}");
    };
    let (id, attempt) = (*id, *attempt);
    assert!(answer.try_recv().is_err() && store.task(id).unwrap().is_none());
    // It ends inside the window: submission and end in one durable commit.
    b.core.attempt_done(id, attempt, Ok("{}".into()), 1);
    let (durable, writes, _) = commit(&mut b, 1);
    assert!(durable && writes >= 2);
    assert_eq!(answer.try_recv().unwrap().unwrap(), [id]);
    let stored = TaskView::from_record(id, &store.task(id).unwrap().unwrap());
    assert_eq!((stored.status, stored.attempts), (Status::Succeeded, 1));
    assert!(b.core.running.is_empty() && b.core.tasks.is_empty());

    // A longer one: released alone at the window's end, then ends on its own.
    let (reply, mut answer) = oneshot::channel();
    b.core.submit(vec![task(sleep(), 5)], "tester", reply, 10);
    let _ = b.core.take_output();
    let id = *b.core.running.keys().next().unwrap();
    b.step(11);
    assert!(answer.try_recv().is_err(), "still inside the window");
    b.core.fire_timers(12);
    let _ = commit(&mut b, 12);
    assert_eq!(answer.try_recv().unwrap().unwrap(), [id]);
    assert_eq!(b.status(id), Status::Running);
    b.core.attempt_done(id, 1, Ok("{}".into()), 13);
    let _ = commit(&mut b, 13);
    assert_eq!(b.status(id), Status::Succeeded);

    // It ends while its released submission commits: the end waits for that commit.
    let (reply, mut answer) = oneshot::channel();
    b.core.submit(vec![task(sleep(), 5)], "tester", reply, 20);
    let id = *b.core.running.keys().next().unwrap();
    b.core.fire_timers(22);
    let (submission, _) = b.core.take_output();
    b.core.attempt_done(id, 1, Ok("{}".into()), 22);
    let (nothing, _) = b.core.take_output();
    assert!(nothing.is_empty(), "no write for a task not yet stored");
    store
        .apply_task_writes(&submission.writes, submission.durable)
        .unwrap();
    b.core.committed(&Ok(()), submission.acks, 23);
    assert_eq!(answer.try_recv().unwrap().unwrap(), [id]);
    let _ = commit(&mut b, 23);
    let stored = TaskView::from_record(id, &store.task(id).unwrap().unwrap());
    assert_eq!(stored.status, Status::Succeeded);

    // Its submission fails: the attempt is stopped, nothing is stored or left busy.
    let (reply, mut answer) = oneshot::channel();
    b.core.submit(vec![task(sleep(), 5)], "tester", reply, 30);
    let id = *b.core.running.keys().next().unwrap();
    b.core.fire_timers(32);
    let (submission, _) = b.core.take_output();
    b.core
        .committed(&Err("disk full".into()), submission.acks, 32);
    assert!(matches!(
        answer.try_recv().unwrap(),
        Err(TaskError::Store(_))
    ));
    let (_, effects) = b.core.take_output();
    assert!(matches!(effects[..], [Effect::Abort { id: a }] if a == id));
    assert!(b.core.running.is_empty() && store.task(id).unwrap().is_none());
    assert_eq!(b.core.running_by_kind.iter().sum::<usize>(), 0);

    // The same idempotency key while the first submission is held: the held writes go
    // out first, in the batch that answers the second, so no answer precedes them.
    let keyed = || {
        let mut t = task(sleep(), 5);
        t.idempotency_key = Some("once".into());
        t
    };
    let (reply, mut first) = oneshot::channel();
    b.core.submit(vec![keyed()], "tester", reply, 50);
    let (reply, mut second) = oneshot::channel();
    b.core.submit(vec![keyed()], "tester", reply, 50);
    let (batch, _) = b.core.take_output();
    assert!(b.core.held.is_empty(), "released by the second submission");
    store
        .apply_task_writes(&batch.writes, batch.durable)
        .unwrap();
    b.core.committed(&Ok(()), batch.acks, 50);
    let id = first.try_recv().unwrap().unwrap()[0];
    assert_eq!(second.try_recv().unwrap().unwrap(), [id]);
    assert!(store.task(id).unwrap().is_some());
    b.core.attempt_done(id, 1, Ok("{}".into()), 51);
    let _ = commit(&mut b, 51);

    // A backup writes files: it never begins before its submission is stored.
    let (reply, _answer) = oneshot::channel();
    b.core
        .submit(vec![task(Kind::StoreBackup, 5)], "tester", reply, 40);
    let (batch, effects) = b.core.take_output();
    assert!(!batch.is_empty());
    assert!(
        !effects.iter().any(|e| matches!(e, Effect::Start { .. })),
        "a backup began before its submission was stored"
    );
}
