//! Persistence: one Diesel `MultiConnection` over MySQL/MariaDB (production, several
//! nodes sharing one database) and SQLite (the embedded default), r2d2 pools and
//! embedded migrations. Knows nothing of the domain beyond rows.
//!
//! Rule: every write goes through [`Store::write`] / [`Store::write_blocking`] (one
//! transaction per job: a savepoint of the SQLite writer's group commit, or a MySQL
//! transaction of its own); pooled connections ([`Store::conn`]) are for reads. A write
//! job never waits for another write. Stored state strings are `states`.

pub mod models;
pub mod schema;
pub mod states;
mod writer;

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::{Arc, OnceLock},
    time::Duration,
};

use diesel::{
    connection::SimpleConnection, mysql::MysqlConnection, r2d2::R2D2Connection,
    sqlite::SqliteConnection, Connection,
};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use writer::SqliteWriter;

const MYSQL_MIGRATIONS: EmbeddedMigrations = embed_migrations!("src/store/migrations/mysql");
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("src/store/migrations/sqlite");

/// How long a SQLite writer waits for the lock before failing: concurrent writers queue.
const SQLITE_BUSY_TIMEOUT_MS: u32 = 10_000;

#[derive(diesel::MultiConnection)]
pub enum DbConnection {
    Mysql(MysqlConnection),
    Sqlite(SqliteConnection),
}

pub type Pool = r2d2::Pool<DbManager>;
pub type PooledConnection = r2d2::PooledConnection<DbManager>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database URL {0:?}: use mysql://USER:PASSWORD@HOST:PORT/DATABASE, sqlite://PATH or a file path")]
    UnsupportedUrl(String),
    #[error("cannot connect to {backend} database {url}: {cause}")]
    Connect {
        backend: Backend,
        url: String,
        cause: String,
    },
    #[error("{backend} database {url}: migrations failed: {cause}")]
    Migration {
        backend: Backend,
        url: String,
        cause: String,
    },
    #[error("{backend} database {url}: no connection available: {cause}")]
    Pool {
        backend: Backend,
        url: String,
        cause: String,
    },
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
    #[error("write not committed: {0}")]
    Writer(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Mysql,
    Sqlite,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Mysql => "MySQL/MariaDB",
            Backend::Sqlite => "SQLite",
        })
    }
}

/// Where the data lives: `mysql://...`, `sqlite://PATH`, `sqlite:PATH` or a plain path.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Mysql(String),
    Sqlite(PathBuf),
}

impl DatabaseUrl {
    pub fn parse(text: &str) -> Result<DatabaseUrl, StoreError> {
        let text = text.trim();
        if text.starts_with("mysql://") || text.starts_with("mariadb://") {
            return Ok(DatabaseUrl::Mysql(text.replacen(
                "mariadb://",
                "mysql://",
                1,
            )));
        }
        if let Some(path) = text
            .strip_prefix("sqlite://")
            .or_else(|| text.strip_prefix("sqlite:"))
        {
            if path.is_empty() {
                return Err(StoreError::UnsupportedUrl(text.into()));
            }
            return Ok(DatabaseUrl::Sqlite(PathBuf::from(path)));
        }
        if text.is_empty() || text.contains("://") {
            return Err(StoreError::UnsupportedUrl(redact(text)));
        }
        Ok(DatabaseUrl::Sqlite(PathBuf::from(text)))
    }

    /// The default: `dialgate.sqlite3` in the data directory.
    pub fn default_in(data_dir: &Path) -> DatabaseUrl {
        DatabaseUrl::Sqlite(data_dir.join("dialgate.sqlite3"))
    }

    pub fn backend(&self) -> Backend {
        match self {
            DatabaseUrl::Mysql(_) => Backend::Mysql,
            DatabaseUrl::Sqlite(_) => Backend::Sqlite,
        }
    }

    fn connect(&self) -> Result<DbConnection, StoreError> {
        let failed = |cause: String| StoreError::Connect {
            backend: self.backend(),
            url: self.to_string(),
            cause,
        };
        match self {
            DatabaseUrl::Mysql(url) => MysqlConnection::establish(url)
                .map(DbConnection::Mysql)
                .map_err(|e| failed(e.to_string())),
            DatabaseUrl::Sqlite(path) => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    create_private_dir(parent).map_err(|e| {
                        failed(format!("cannot create directory {}: {e}", parent.display()))
                    })?;
                }
                prepare_private_sqlite_files(path).map_err(|e| {
                    failed(format!("cannot create or restrict {}: {e}", path.display()))
                })?;
                let mut conn = SqliteConnection::establish(&path.to_string_lossy())
                    .map_err(|e| failed(e.to_string()))?;
                // busy_timeout first: switching to WAL itself needs the lock.
                conn.batch_execute(&format!(
                    "PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}; PRAGMA journal_mode = WAL; \
                     PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;"
                ))
                .map_err(|e| failed(e.to_string()))?;
                Ok(DbConnection::Sqlite(conn))
            }
        }
    }
}

/// Creates `dir` and its missing parents with mode 0700 (whatever the umask): the data
/// directory holds password hashes, ID scans and photos. An existing directory is left
/// as it is (it may be shared, like `/tmp`); a warning says when others can list it.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        // The umask may have taken bits away; it cannot have added any.
        let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
        if mode != 0o700 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
    } else if let Ok(meta) = std::fs::metadata(dir) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(dir = %dir.display(), mode = format!("{mode:o}"),
                "the database's directory is open to other users; consider chmod 700");
        }
    }
    Ok(())
}

/// Creates the SQLite database file with mode 0600 before SQLite opens it, so the
/// `-wal` and `-shm` files SQLite creates beside it get 0600 too (SQLite copies the
/// database's mode). An existing database, `-wal` or `-shm` readable by others is
/// tightened to 0600, with a warning.
fn prepare_private_sqlite_files(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if path.as_os_str() == ":memory:" {
        return Ok(());
    }
    let created = !path.exists();
    if created {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)?;
    }
    let mut files = vec![path.to_path_buf()];
    for suffix in ["-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        files.push(PathBuf::from(name));
    }
    for file in files {
        let Ok(meta) = std::fs::metadata(&file) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o777;
        if !meta.is_file() || mode & 0o077 == 0 {
            continue;
        }
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode & 0o700))?;
        if !created {
            tracing::warn!(file = %file.display(), was = format!("{mode:o}"),
                now = format!("{:o}", mode & 0o700),
                "database file was readable by other users; restricted it to its owner");
        }
    }
    Ok(())
}

/// Hides the password of a URL for messages and logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseUrl::Mysql(url) => f.write_str(&redact(url)),
            DatabaseUrl::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// r2d2 manager that connects to the configured backend only. (The derived
/// `MultiConnection::establish` tries every backend in turn, which would hide the real
/// error and could open a SQLite file named after a MySQL URL.)
#[derive(Debug)]
pub struct DbManager {
    url: DatabaseUrl,
}

impl r2d2::ManageConnection for DbManager {
    type Connection = DbConnection;
    type Error = StoreError;

    fn connect(&self) -> Result<DbConnection, StoreError> {
        self.url.connect()
    }

    fn is_valid(&self, conn: &mut DbConnection) -> Result<(), StoreError> {
        conn.ping().map_err(StoreError::Query)
    }

    fn has_broken(&self, conn: &mut DbConnection) -> bool {
        conn.is_broken()
    }
}

#[derive(Debug, Clone)]
pub struct OpenOptions {
    pub max_connections: u32,
    /// Apply pending migrations when opening (on by default; `dialgate migrate` does it
    /// explicitly when this is off).
    pub migrate: bool,
    pub connect_timeout: Duration,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            max_connections: 8,
            migrate: true,
            // Short: a verify call holds an Asterisk channel while it waits.
            connect_timeout: Duration::from_secs(3),
        }
    }
}

/// The connection pool and what it points at.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    url: DatabaseUrl,
    /// Started on the first [`Store::write`] to a SQLite database.
    sqlite_writer: Arc<OnceLock<SqliteWriter>>,
}

impl Store {
    /// Connects once (so the real cause of a failure reaches the user), builds the pool
    /// and applies migrations unless told not to.
    pub fn open(url: &DatabaseUrl, options: &OpenOptions) -> Result<Store, StoreError> {
        let mut first = url.connect()?;
        if options.migrate {
            run_migrations(url, &mut first)?;
        }
        drop(first);
        let pool = r2d2::Pool::builder()
            .max_size(options.max_connections)
            .min_idle(Some(0))
            .connection_timeout(options.connect_timeout)
            .build_unchecked(DbManager { url: url.clone() });
        Ok(Store {
            pool,
            url: url.clone(),
            sqlite_writer: Arc::default(),
        })
    }

    pub fn url(&self) -> &DatabaseUrl {
        &self.url
    }

    pub fn backend(&self) -> Backend {
        self.url.backend()
    }

    /// A pooled connection, for reads (writes go through [`Store::write`]). Blocking:
    /// call from a blocking thread, never an async worker.
    pub fn conn(&self) -> Result<PooledConnection, StoreError> {
        self.pool.get().map_err(|e| StoreError::Pool {
            backend: self.backend(),
            url: self.url.to_string(),
            cause: e.to_string(),
        })
    }

    /// Runs `work` in a write transaction and answers once it is committed (`Ok`) or
    /// rolled back (`Err`). On SQLite the process's writer thread runs it, in a savepoint
    /// of a `BEGIN IMMEDIATE` transaction that several jobs may share (group commit, see
    /// `writer.rs`); on MySQL it gets a pooled connection and a transaction of its own on
    /// a blocking thread. `work` must not wait for another write.
    pub async fn write<T, E>(
        &self,
        work: impl FnOnce(&mut DbConnection) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + From<diesel::result::Error> + Send + 'static,
    {
        match self.url {
            DatabaseUrl::Sqlite(_) => self.sqlite_writer()?.write(work).await,
            DatabaseUrl::Mysql(_) => {
                let store = self.clone();
                tokio::task::spawn_blocking(move || (*store.conn()?).transaction(work))
                    .await
                    .map_err(|e| StoreError::Writer(format!("a write job failed: {e}")))?
            }
        }
    }

    /// [`Store::write`] for code on a blocking thread (or without a runtime): waits for
    /// the answer instead of awaiting it.
    pub fn write_blocking<T, E>(
        &self,
        work: impl FnOnce(&mut DbConnection) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + From<diesel::result::Error> + Send + 'static,
    {
        match self.url {
            DatabaseUrl::Sqlite(_) => {
                futures::executor::block_on(self.sqlite_writer()?.write(work))
            }
            DatabaseUrl::Mysql(_) => (*self.conn()?).transaction(work),
        }
    }

    fn sqlite_writer(&self) -> Result<&SqliteWriter, StoreError> {
        if let Some(writer) = self.sqlite_writer.get() {
            return Ok(writer);
        }
        let started = SqliteWriter::start(self.url.clone())?;
        Ok(self.sqlite_writer.get_or_init(|| started))
    }

    /// Whether the store answers (for `/healthz`).
    pub fn ping(&self) -> Result<(), StoreError> {
        self.conn()?.ping().map_err(StoreError::Query)
    }

    /// Migrations the database still lacks (names), without applying them.
    pub fn pending_migrations(&self) -> Result<Vec<String>, StoreError> {
        let failed = |cause: String| StoreError::Migration {
            backend: self.backend(),
            url: self.url.to_string(),
            cause,
        };
        let mut conn = self.conn()?;
        let pending = match &mut *conn {
            DbConnection::Mysql(c) => c
                .pending_migrations(MYSQL_MIGRATIONS)
                .map(|m| m.iter().map(|m| m.name().to_string()).collect()),
            DbConnection::Sqlite(c) => c
                .pending_migrations(SQLITE_MIGRATIONS)
                .map(|m| m.iter().map(|m| m.name().to_string()).collect()),
        };
        pending.map_err(|e| failed(e.to_string()))
    }

    /// Applies pending migrations; returns the names of those applied.
    pub fn migrate(&self) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn()?;
        run_migrations(&self.url, &mut conn)
    }
}

fn run_migrations(url: &DatabaseUrl, conn: &mut DbConnection) -> Result<Vec<String>, StoreError> {
    let failed = |cause: String| StoreError::Migration {
        backend: url.backend(),
        url: url.to_string(),
        cause,
    };
    // Several nodes (or CLI runs) may start at once on a fresh database: only one
    // migrates at a time, the others then find nothing pending.
    let applied = match (conn, url) {
        (DbConnection::Mysql(c), _) => {
            c.batch_execute("DO GET_LOCK('dialgate_migrations', 120)")
                .map_err(|e| failed(format!("taking the migration lock: {e}")))?;
            let applied = c
                .run_pending_migrations(MYSQL_MIGRATIONS)
                .map(|v| names(&v));
            let _ = c.batch_execute("DO RELEASE_LOCK('dialgate_migrations')");
            applied
        }
        (DbConnection::Sqlite(c), DatabaseUrl::Sqlite(path)) => {
            let _lock = FileLock::exclusive(&path.with_extension("migrations.lock"))
                .map_err(|e| failed(format!("taking the migration lock: {e}")))?;
            c.run_pending_migrations(SQLITE_MIGRATIONS)
                .map(|v| names(&v))
        }
        (DbConnection::Sqlite(_), DatabaseUrl::Mysql(_)) => unreachable!("backend follows the URL"),
    };
    applied.map_err(|e| failed(e.to_string()))
}

fn names(versions: &[diesel::migration::MigrationVersion<'_>]) -> Vec<String> {
    versions.iter().map(|v| v.to_string()).collect()
}

/// An advisory lock on a file beside the SQLite database, held until dropped.
struct FileLock(std::fs::File);

impl FileLock {
    fn exclusive(path: &Path) -> std::io::Result<FileLock> {
        use std::os::fd::AsRawFd;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        // SAFETY: flock on a descriptor we own; it blocks until the lock is ours.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(FileLock(file))
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // SAFETY: unlocking the descriptor this value owns.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// Milliseconds since the Unix epoch: how every time is stored.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls() {
        assert_eq!(
            DatabaseUrl::parse("sqlite:///var/lib/dialgate/db.sqlite3").unwrap(),
            DatabaseUrl::Sqlite("/var/lib/dialgate/db.sqlite3".into())
        );
        assert_eq!(
            DatabaseUrl::parse("data/x.db").unwrap(),
            DatabaseUrl::Sqlite("data/x.db".into())
        );
        let mysql = DatabaseUrl::parse("mysql://root:s3cret@127.0.0.1:3306/dg").unwrap();
        assert_eq!(mysql.backend(), Backend::Mysql);
        assert_eq!(mysql.to_string(), "mysql://root:***@127.0.0.1:3306/dg");
        assert!(DatabaseUrl::parse("postgres://u:p@h/db").is_err());
        assert!(!DatabaseUrl::parse("postgres://u:pw@h/db")
            .unwrap_err()
            .to_string()
            .contains("pw"));
    }
}
