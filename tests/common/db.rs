//! A throw-away database on either backend, for tests that run the `dialgate` binary.
//!
//! - [`TestDb::sqlite`]: a temporary directory holding `dialgate.sqlite3`.
//! - [`TestDb::mysql`]: a uniquely named database on the MariaDB/MySQL server given by
//!   `DIALGATE_TEST_MYSQL_URL` (default `mysql://root@127.0.0.1:3306`), dropped again when
//!   the `TestDb` is. An unreachable server is a test failure, never a skip.
//!
//! Neither is migrated on creation: call [`TestDb::migrate`] (which runs `dialgate
//! migrate`) when a test wants the tables to exist before its first command.

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

use dialgate::{
    auth::accounts::{self, Enrollment},
    config::{Config, GlobalOptions},
    store::{schema::audit_events, DatabaseUrl, OpenOptions, Store},
};
use diesel::{prelude::*, sql_types::BigInt, Connection, MysqlConnection, RunQueryDsl};

/// Runs `$scenario(&TestDb)` once per backend, as tests named `$sqlite` and `$mysql`:
///
/// ```ignore
/// on_both_backends! {
///     scenario_enroll => enroll_sqlite, enroll_mysql;
/// }
/// ```
///
/// With `async` before the list the scenarios are `async fn`s, each run on a tokio
/// runtime with two worker threads.
#[allow(unused_macros)]
macro_rules! on_both_backends {
    (async $($scenario:ident => $sqlite:ident, $mysql:ident;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $sqlite() {
            $scenario(&$crate::common::db::TestDb::sqlite()).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $mysql() {
            $scenario(&$crate::common::db::TestDb::mysql()).await;
        }
    )*};
    ($($scenario:ident => $sqlite:ident, $mysql:ident;)*) => {$(
        #[test]
        fn $sqlite() {
            $scenario(&$crate::common::db::TestDb::sqlite());
        }

        #[test]
        fn $mysql() {
            $scenario(&$crate::common::db::TestDb::mysql());
        }
    )*};
}
#[allow(unused_imports)]
pub(crate) use on_both_backends;

pub const DEFAULT_MYSQL_URL: &str = "mysql://root@127.0.0.1:3306";

/// The tables an enrollment writes to.
pub const ACCOUNT_TABLES: [&str; 4] = ["accounts", "phones", "identity_documents", "audit_events"];

/// Which backend a [`TestDb`] lives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Mysql,
}

pub struct TestDb {
    backend: Backend,
    url: String,
    /// The SQLite file's directory (kept alive for the test's duration).
    dir: Option<tempfile::TempDir>,
    /// Server URL and database name of a MySQL database to drop on `Drop`.
    mysql: Option<(String, String)>,
}

/// Server base URL for the MySQL tests, without a trailing slash.
pub fn mysql_base_url() -> String {
    std::env::var("DIALGATE_TEST_MYSQL_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_MYSQL_URL.to_string())
        .trim()
        .trim_end_matches('/')
        .to_string()
}

/// An admin connection to the MySQL server (no default database). Panics, saying what
/// to do, when the server cannot be reached: the MySQL tests must run.
fn mysql_admin(base: &str) -> MysqlConnection {
    MysqlConnection::establish(base).unwrap_or_else(|e| {
        panic!(
            "MariaDB/MySQL at {base} is unreachable: {e}\n\
             The MySQL tests need a running server: start MariaDB (root with an empty \
             password on 127.0.0.1:3306) or point DIALGATE_TEST_MYSQL_URL at one."
        )
    })
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

impl TestDb {
    /// A fresh SQLite database file in a new temporary directory (not yet created).
    pub fn sqlite() -> TestDb {
        let dir = tempfile::Builder::new()
            .prefix("dialgate-test-")
            .tempdir()
            .expect("create a temporary directory");
        let url = format!("sqlite://{}", dir.path().join("dialgate.sqlite3").display());
        TestDb {
            backend: Backend::Sqlite,
            url,
            dir: Some(dir),
            mysql: None,
        }
    }

    /// A fresh, empty MySQL/MariaDB database named `dialgate_t_<pid>_<n>_<nanos>`.
    pub fn mysql() -> TestDb {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let base = mysql_base_url();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "dialgate_t_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            nanos
        );
        let mut admin = mysql_admin(&base);
        diesel::sql_query(format!(
            "CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
        ))
        .execute(&mut admin)
        .unwrap_or_else(|e| panic!("cannot create test database {name} on {base}: {e}"));
        TestDb {
            backend: Backend::Mysql,
            url: format!("{base}/{name}"),
            dir: None,
            mysql: Some((base, name)),
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// What `--database-url` is given.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The MariaDB database's name (`None` on SQLite).
    pub fn mysql_name(&self) -> Option<&str> {
        self.mysql.as_ref().map(|(_, name)| name.as_str())
    }

    /// A new temporary directory for a test's own files (CSV, config, documents).
    pub fn scratch_dir(&self) -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("dialgate-test-files-")
            .tempdir()
            .expect("create a temporary directory")
    }

    /// The `dialgate` binary with `--database-url` set and no `DIALGATE_*` settings
    /// inherited from the environment running the tests.
    pub fn cmd(&self) -> assert_cmd::Command {
        let mut cmd = bare_cmd();
        cmd.arg("--database-url").arg(self.url());
        cmd
    }

    /// Runs `dialgate migrate` and checks it succeeded.
    pub fn migrate(&self) {
        self.cmd().arg("migrate").assert().success();
    }

    /// A store on this database that does not migrate it.
    pub fn store(&self) -> Store {
        let url = DatabaseUrl::parse(&self.url).expect("a valid test database URL");
        let options = OpenOptions {
            migrate: false,
            ..OpenOptions::default()
        };
        Store::open(&url, &options)
            .unwrap_or_else(|e| panic!("cannot open test database {}: {e}", self.url))
    }

    /// The single BIGINT a query returns as column `n`, e.g.
    /// `SELECT COUNT(*) AS n FROM phones WHERE e164 = '+8613800138000'`.
    pub fn query_i64(&self, sql: &str) -> i64 {
        let store = self.store();
        let mut conn = store.conn().expect("a test database connection");
        diesel::sql_query(sql)
            .get_result::<Count>(&mut *conn)
            .unwrap_or_else(|e| panic!("query {sql:?} on {}: {e}", self.url))
            .n
    }

    /// [`query_i64`](Self::query_i64) until it returns `expected`, for at most 5 s; the last
    /// value. For rows written after the caller is answered (a verdict decided before the
    /// store writes its audit row once the FastAGI socket is closed).
    pub fn query_i64_until(&self, sql: &str, expected: i64) -> i64 {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let n = self.query_i64(sql);
            if n == expected || std::time::Instant::now() > deadline {
                return n;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Runs one statement (e.g. an UPDATE) and returns the rows it affected.
    pub fn execute(&self, sql: &str) -> usize {
        let store = self.store();
        let mut conn = store.conn().expect("a test database connection");
        diesel::sql_query(sql)
            .execute(&mut *conn)
            .unwrap_or_else(|e| panic!("statement {sql:?} on {}: {e}", self.url))
    }

    /// Enrolls a user through the real CLI (`--password-stdin`); the test fails if it fails.
    pub fn enroll(&self, username: &str, phone: &str, name: &str, password: &str) {
        let out = self
            .cmd()
            .args(["enroll", "--username", username, "--phone", phone])
            .args(["--name", name, "--password-stdin"])
            .write_stdin(format!("{password}\n"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "enroll failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Rows in `table` (one of the schema's table names).
    pub fn count(&self, table: &str) -> i64 {
        assert!(
            table.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
            "not a table name: {table:?}"
        );
        self.query_i64(&format!("SELECT COUNT(*) AS n FROM {table}"))
    }

    /// Rows in accounts, phones, identity_documents and audit_events, in that order.
    pub fn counts(&self) -> [i64; 4] {
        ACCOUNT_TABLES.map(|t| self.count(t))
    }

    /// Audit rows of this kind (e.g. `enrollment`, `account_deleted`).
    pub fn audit_count(&self, kind: &str) -> i64 {
        let store = self.store();
        let mut conn = store.conn().expect("a test database connection");
        audit_events::table
            .filter(audit_events::kind.eq(kind))
            .count()
            .get_result(&mut *conn)
            .unwrap_or_else(|e| panic!("counting {kind} audit events on {}: {e}", self.url))
    }

    /// Whether the accounts table exists yet (i.e. the database was migrated).
    pub fn has_accounts_table(&self) -> bool {
        let sql = match self.backend {
            Backend::Sqlite => {
                "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = 'accounts'"
            }
            Backend::Mysql => {
                "SELECT COUNT(*) AS n FROM information_schema.tables \
                 WHERE table_schema = DATABASE() AND table_name = 'accounts'"
            }
        };
        self.query_i64(sql) == 1
    }
}

/// The `dialgate` binary with no `DIALGATE_*` settings inherited from the environment.
pub fn bare_cmd() -> assert_cmd::Command {
    assert_cmd::Command::from_std(dialgate_command())
}

/// [`bare_cmd`] as a plain [`std::process::Command`], for a process to spawn and watch.
pub fn dialgate_command() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_dialgate"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("DIALGATE_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("NO_COLOR", "1");
    cmd
}

/// A temporary data directory, its configuration resolved as `serve` resolves it (so its
/// SQLite database is inside), and a store on that database: for the in-process gateway
/// tests.
pub struct DataDir {
    pub config: Config,
    pub store: Store,
    _dir: tempfile::TempDir,
}

impl DataDir {
    pub fn open(options: &OpenOptions) -> DataDir {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::resolve(&GlobalOptions {
            data_dir: Some(dir.path().to_path_buf()),
            ..GlobalOptions::default()
        })
        .unwrap();
        let store = Store::open(&config.database_url, options).unwrap();
        DataDir {
            config,
            store,
            _dir: dir,
        }
    }

    /// Enrolls a user through the library (no documents); the test fails if it fails.
    pub fn enroll(&self, username: &str, password: &str, display_name: &str, phone: &str) {
        let enrollment = Enrollment::prepare(
            username,
            password,
            display_name,
            phone,
            vec![],
            &dialgate::cli::enroll::rules(&self.config),
        )
        .unwrap();
        accounts::enroll(&self.store, &enrollment).unwrap();
    }
}

/// What a command printed on stdout, as text.
pub fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// What a command printed on stderr, as text.
pub fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Checks the exit code and that stdout or stderr says `needle`, with everything in the
/// message.
#[track_caller]
pub fn expect(output: &std::process::Output, code: i32, needle: &str) {
    let (out, err) = (stdout(output), stderr(output));
    assert_eq!(
        output.status.code(),
        Some(code),
        "expected exit {code}\nstdout:\n{out}\nstderr:\n{err}"
    );
    assert!(
        out.contains(needle) || err.contains(needle),
        "expected {needle:?} in the output\nstdout:\n{out}\nstderr:\n{err}"
    );
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((base, name)) = self.mysql.take() {
            // Never panic here: a panic while a failing test unwinds would abort.
            let dropped = MysqlConnection::establish(&base)
                .map_err(|e| e.to_string())
                .and_then(|mut admin| {
                    diesel::sql_query(format!("DROP DATABASE IF EXISTS `{name}`"))
                        .execute(&mut admin)
                        .map_err(|e| e.to_string())
                });
            if let Err(e) = dropped {
                eprintln!("warning: could not drop test database {name} on {base}: {e}");
            }
        }
        drop(self.dir.take());
    }
}

/// How a [`DbProxy`] treats the connections through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    Forward,
    /// The database hangs: sockets stay open, nothing comes back.
    Hang,
    /// The database is gone: live connections close, new ones are closed at once.
    Refuse,
}

/// A TCP proxy between dialgate and this test's MariaDB database.
pub struct DbProxy {
    pub addr: std::net::SocketAddr,
    /// The database's URL through the proxy.
    pub url: String,
    mode: std::sync::Arc<tokio::sync::watch::Sender<ProxyMode>>,
    task: tokio::task::JoinHandle<()>,
}

impl DbProxy {
    /// A proxy to `db`'s server, forwarding.
    pub async fn to(db: &TestDb) -> DbProxy {
        let url = db.url();
        let rest = url.strip_prefix("mysql://").expect("a mysql:// URL");
        let (authority, name) = rest.split_once('/').expect("a database name");
        let (user, host) = match authority.rsplit_once('@') {
            Some((user, host)) => (format!("{user}@"), host),
            None => (String::new(), authority),
        };
        let host = match host.contains(':') {
            true => host.to_string(),
            false => format!("{host}:3306"),
        };
        let upstream = tokio::net::lookup_host(&host)
            .await
            .unwrap()
            .next()
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mode = std::sync::Arc::new(tokio::sync::watch::channel(ProxyMode::Forward).0);
        let state = mode.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                let mut mode = state.subscribe();
                tokio::spawn(async move {
                    if *mode.borrow() == ProxyMode::Refuse {
                        return;
                    }
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    if *mode.borrow() == ProxyMode::Forward {
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            _ = mode.wait_for(|m| *m != ProxyMode::Forward) => {}
                        }
                    }
                    // Hang: hold both ends, forward nothing, until refused.
                    let _ = mode.wait_for(|m| *m == ProxyMode::Refuse).await;
                });
            }
        });
        DbProxy {
            addr,
            url: format!("mysql://{user}{addr}/{name}"),
            mode,
            task,
        }
    }

    pub fn set(&self, mode: ProxyMode) {
        self.mode.send_replace(mode);
    }
}

impl Drop for DbProxy {
    fn drop(&mut self) {
        self.set(ProxyMode::Refuse);
        self.task.abort();
    }
}
