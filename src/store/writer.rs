//! Group commit for SQLite. SQLite has one writer at a time and every commit writes the
//! WAL frames of every page it touched, so a transaction per call spends most of its time
//! committing. One thread owns the write connection: it takes the write jobs waiting in
//! its queue, runs each in its own savepoint (a failing job rolls back alone) inside one
//! `BEGIN IMMEDIATE` transaction, commits once, and only then answers each job. Under
//! load a batch grows to what arrived during the previous commit; an idle server commits
//! every job on its own, so nothing waits for company.
//!
//! Checkpoints (copying the WAL into the database file, then syncing both: two fsyncs,
//! ~4 ms each on a VM disk) would otherwise run inside the commit that crosses SQLite's
//! 1,000-page threshold, on every call's path several times a second at 1,000 calls/s.
//! A second thread checkpoints (PASSIVE: never blocks the writer or readers) a few times
//! a second instead. A passive checkpoint rarely catches up with a busy writer, and the
//! WAL only starts over once one has, so the writer itself still checkpoints, but only
//! when the WAL reaches [`WAL_RESTART_PAGES`]: once every few seconds at 1,000 calls/s.

use std::{
    collections::VecDeque,
    panic::{catch_unwind, AssertUnwindSafe},
    sync::mpsc,
    time::Duration,
};

use diesel::{
    connection::{AnsiTransactionManager, SimpleConnection, TransactionManager},
    result::Error as DieselError,
    Connection,
};
use tokio::sync::oneshot;
use tracing::warn;

use super::{DatabaseUrl, DbConnection, StoreError};

/// At most this many jobs share a commit, so one batch's answers are not held back long.
const MAX_BATCH: usize = 256;

/// How often the checkpointer moves the WAL into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

/// The writer's own checkpoint threshold (SQLite's default is 1,000): at most this many
/// 4 KiB pages (64 MiB) of WAL before it starts over.
#[cfg(not(test))]
const WAL_RESTART_PAGES: u32 = 16_384;
/// Small in tests, so a bounded WAL shows after a few thousand commits.
#[cfg(test)]
const WAL_RESTART_PAGES: u32 = 256;

/// What a job's outcome does once the batch's commit has succeeded or failed.
type Answer = Box<dyn FnOnce(Result<(), &StoreError>) + Send>;

trait WriteJob: Send {
    /// Runs the job inside the open transaction (in a savepoint of its own); `false`
    /// when it failed.
    fn run(self: Box<Self>, conn: &mut DbConnection) -> (Answer, bool);
    /// The transaction could not be started: answers with `error` without running.
    fn reject(self: Box<Self>, error: &StoreError);
}

struct Job<F, T, E> {
    work: F,
    reply: oneshot::Sender<Result<T, E>>,
}

impl<F, T, E> WriteJob for Job<F, T, E>
where
    F: FnOnce(&mut DbConnection) -> Result<T, E> + Send,
    T: Send + 'static,
    E: From<StoreError> + From<DieselError> + Send + 'static,
{
    fn run(self: Box<Self>, conn: &mut DbConnection) -> (Answer, bool) {
        let Job { work, reply } = *self;
        let outcome = catch_unwind(AssertUnwindSafe(|| conn.transaction(work)));
        let result = match outcome {
            Ok(result) => result,
            Err(_) => {
                // The savepoint is still open: undo the job's half-done work.
                type Manager = <DbConnection as Connection>::TransactionManager;
                if let Err(e) = Manager::rollback_transaction(conn) {
                    warn!(error = %e, "could not roll back a panicked write job");
                }
                Err(
                    StoreError::Writer("a write job panicked; its changes were rolled back".into())
                        .into(),
                )
            }
        };
        let succeeded = result.is_ok();
        let answer: Answer = Box::new(move |committed| {
            let answer = match (committed, result) {
                (Ok(()), result) => result,
                // A job that failed on its own keeps its own error.
                (Err(_), Err(own)) => Err(own),
                (Err(commit), Ok(_)) => Err(StoreError::Writer(commit.to_string()).into()),
            };
            let _ = reply.send(answer);
        });
        (answer, succeeded)
    }

    fn reject(self: Box<Self>, error: &StoreError) {
        let _ = self
            .reply
            .send(Err(StoreError::Writer(error.to_string()).into()));
    }
}

/// The handle to the writer and checkpointer threads; both end when it is dropped.
pub(super) struct SqliteWriter {
    queue: mpsc::Sender<Box<dyn WriteJob>>,
    _checkpointer: mpsc::Sender<()>,
}

impl SqliteWriter {
    pub(super) fn start(url: DatabaseUrl) -> Result<SqliteWriter, StoreError> {
        let spawn = |name: &str, body: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(body)
                .map(drop)
                .map_err(|e| StoreError::Writer(format!("cannot start the {name} thread: {e}")))
        };
        let (queue, jobs) = mpsc::channel();
        let (checkpointer, stop) = mpsc::channel();
        let writer_url = url.clone();
        spawn(
            "dialgate-sqlite-writer",
            Box::new(move || run(writer_url, jobs)),
        )?;
        spawn(
            "dialgate-sqlite-checkpoint",
            Box::new(move || checkpoint(url, stop)),
        )?;
        Ok(SqliteWriter {
            queue,
            _checkpointer: checkpointer,
        })
    }

    pub(super) async fn write<T, E>(
        &self,
        work: impl FnOnce(&mut DbConnection) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + From<DieselError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Box::new(Job { work, reply }))
            .map_err(|_| StoreError::Writer("the SQLite writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Writer("the SQLite writer dropped the job".into()))?
    }
}

fn run(url: DatabaseUrl, jobs: mpsc::Receiver<Box<dyn WriteJob>>) {
    type Manager = <DbConnection as Connection>::TransactionManager;
    let mut conn: Option<DbConnection> = None;
    let mut waiting: VecDeque<Box<dyn WriteJob>> = VecDeque::new();
    loop {
        if waiting.is_empty() {
            match jobs.recv() {
                Ok(job) => waiting.push_back(job),
                Err(_) => return,
            }
        }
        waiting.extend(
            jobs.try_iter()
                .take(MAX_BATCH.saturating_sub(waiting.len())),
        );
        let started = reuse_or_connect(&mut conn, &url, |c| {
            c.batch_execute(&format!("PRAGMA wal_autocheckpoint = {WAL_RESTART_PAGES}"))
        })
        .and_then(|mut c| match &mut c {
            DbConnection::Sqlite(sqlite) => {
                AnsiTransactionManager::begin_transaction_sql(sqlite, "BEGIN IMMEDIATE")?;
                Ok(c)
            }
            DbConnection::Mysql(_) => Err(StoreError::Writer(
                "the group-commit writer is for SQLite only".into(),
            )),
        });
        let mut open = match started {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, jobs = waiting.len(), "SQLite writer could not begin a transaction");
                waiting.drain(..).for_each(|job| job.reject(&e));
                continue;
            }
        };
        let mut answers: Vec<Answer> = Vec::with_capacity(waiting.len());
        while let Some(job) = waiting.pop_front() {
            let (answer, succeeded) = job.run(&mut open);
            answers.push(answer);
            // Some errors (disk full, I/O) make SQLite roll back the whole transaction;
            // a job run after them would commit on its own, unseen. The rest wait for the
            // next transaction, and this one's COMMIT tells whether it still stands.
            if !succeeded {
                break;
            }
        }
        let committed = Manager::commit_transaction(&mut open).map_err(StoreError::Query);
        match &committed {
            Ok(()) => conn = Some(open),
            // Reconnect rather than reuse a connection whose state is unclear.
            Err(e) => warn!(error = %e, jobs = answers.len(), "SQLite writer could not commit"),
        }
        for answer in answers {
            answer(committed.as_ref().map(|_| ()));
        }
    }
}

/// The connection kept from the last round, or a new one set up by `setup`. A thread
/// drops its connection after a failure, so a broken one is never reused.
fn reuse_or_connect(
    kept: &mut Option<DbConnection>,
    url: &DatabaseUrl,
    setup: impl FnOnce(&mut DbConnection) -> Result<(), DieselError>,
) -> Result<DbConnection, StoreError> {
    match kept.take() {
        Some(conn) => Ok(conn),
        None => {
            let mut conn = url.connect()?;
            setup(&mut conn)?;
            Ok(conn)
        }
    }
}

/// Checkpoints the WAL every [`CHECKPOINT_EVERY`] until `stop` is dropped, then once more.
fn checkpoint(url: DatabaseUrl, stop: mpsc::Receiver<()>) {
    let mut conn: Option<DbConnection> = None;
    let mut failing = false;
    loop {
        let last = matches!(
            stop.recv_timeout(CHECKPOINT_EVERY),
            Err(mpsc::RecvTimeoutError::Disconnected)
        );
        let done = reuse_or_connect(&mut conn, &url, |_| Ok(())).and_then(|mut c| {
            c.batch_execute("PRAGMA wal_checkpoint(PASSIVE)")?;
            Ok(c)
        });
        match done {
            Ok(c) => {
                conn = Some(c);
                failing = false;
            }
            // Once per outage: the next success clears it.
            Err(e) if !failing => {
                warn!(error = %e, "SQLite checkpoint failed; the WAL grows until it succeeds");
                failing = true;
            }
            Err(_) => {}
        }
        if last {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use diesel::prelude::*;

    use crate::store::{schema::audit_events, OpenOptions, Store, StoreError};

    fn open_sqlite(dir: &tempfile::TempDir) -> Store {
        let url = crate::store::DatabaseUrl::Sqlite(dir.path().join("writer.sqlite3"));
        Store::open(&url, &OpenOptions::default()).unwrap()
    }

    async fn insert(store: &Store, kind: &'static str) -> Result<(), StoreError> {
        store
            .write(move |conn| {
                diesel::insert_into(audit_events::table)
                    .values((
                        audit_events::at.eq(1_i64),
                        audit_events::kind.eq(kind),
                        audit_events::outcome.eq("ok"),
                    ))
                    .execute(conn)?;
                Ok(())
            })
            .await
    }

    fn kinds(store: &Store) -> Vec<String> {
        let mut kinds: Vec<String> = audit_events::table
            .select(audit_events::kind)
            .load(&mut *store.conn().unwrap())
            .unwrap();
        kinds.sort();
        kinds
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_are_all_committed_and_answered() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_sqlite(&dir);
        let names: Vec<&'static str> = (0..300)
            .map(|i| &*Box::leak(format!("job-{i:03}").into_boxed_str()))
            .collect();
        let tasks: Vec<_> = names
            .iter()
            .map(|&name| {
                let store = store.clone();
                tokio::spawn(async move { insert(&store, name).await })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        let mut expected: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        expected.sort();
        assert_eq!(kinds(&store), expected);
        // Durable: a second process-level handle on the same file sees every row.
        assert_eq!(kinds(&open_sqlite(&dir)).len(), 300);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_job_rolls_back_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_sqlite(&dir);
        let mut tasks = Vec::new();
        for i in 0..60 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                if i % 3 == 1 {
                    // Writes, then fails: none of its row may remain.
                    store
                        .write(|conn| {
                            diesel::insert_into(audit_events::table)
                                .values((
                                    audit_events::at.eq(1_i64),
                                    audit_events::kind.eq("doomed"),
                                    audit_events::outcome.eq("ok"),
                                ))
                                .execute(conn)?;
                            Err::<(), _>(StoreError::Writer("refused by the job".into()))
                        })
                        .await
                        .map(|_| "unexpected")
                } else {
                    insert(&store, "kept").await.map(|_| "kept")
                }
            }));
        }
        let mut refused = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(kind) => assert_eq!(kind, "kept"),
                Err(e) => {
                    assert!(e.to_string().contains("refused by the job"), "{e}");
                    refused += 1;
                }
            }
        }
        assert_eq!(refused, 20);
        assert_eq!(kinds(&store), vec!["kept".to_string(); 40]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_job_is_rolled_back_and_the_writer_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_sqlite(&dir);
        let panicked = store
            .write(|conn| -> Result<(), StoreError> {
                diesel::insert_into(audit_events::table)
                    .values((
                        audit_events::at.eq(1_i64),
                        audit_events::kind.eq("half-done"),
                        audit_events::outcome.eq("ok"),
                    ))
                    .execute(conn)?;
                panic!("job bug");
            })
            .await;
        assert!(
            panicked
                .as_ref()
                .is_err_and(|e| e.to_string().contains("panicked")),
            "{panicked:?}"
        );
        insert(&store, "after").await.unwrap();
        assert_eq!(kinds(&store), vec!["after".to_string()]);
    }

    /// One commit after another (the worst case: no batching) must not grow the WAL
    /// without end: the background checkpoint alone never lets it start over.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_starts_over_under_steady_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_sqlite(&dir);
        for _ in 0..3_000 {
            insert(&store, "steady").await.unwrap();
        }
        let wal = dir.path().join("writer.sqlite3-wal");
        let wal_bytes = std::fs::metadata(&wal).unwrap().len();
        // 3,000 separate commits of 2-3 pages each would be ~30 MiB of WAL (50 MB seen
        // without the writer's own checkpoint). The restart lands a little past the
        // threshold, more so on a loaded machine while the background checkpointer holds
        // its read snapshot (5 MB seen): the bound tells the two apart without timing.
        let bound = u64::from(super::WAL_RESTART_PAGES + 256) * 4_200 * 4;
        assert!(
            wal_bytes < bound,
            "WAL is {wal_bytes} bytes after 3,000 commits (bound {bound})"
        );
        assert_eq!(kinds(&store).len(), 3_000);
    }
}
