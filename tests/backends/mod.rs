//! The two storage backends, for suites that run every test against both: a fresh SQLite file
//! in a temporary directory, or a fresh PostgreSQL database on the server named by
//! `VTRIAGE_TEST_PG` (`scripts/postgres` starts one and prints that variable). Without the
//! variable the PostgreSQL half of each test says it is skipped and passes.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::{AssertSqlSafe, Connection, PgConnection};
use vtriage::store::Store;
use vtriage::store::postgres::PgStore;
use vtriage::store::sqlite::SqliteStore;

/// Names the server the PostgreSQL tests use (an admin URL: the tests create databases).
pub const PG_ENV: &str = "VTRIAGE_TEST_PG";

/// Runs each named `async fn(Backend)` as two tests, `NAME::sqlite` and `NAME::postgres`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(super::backends::Backend::sqlite().await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(backend) = super::backends::Backend::postgres().await {
                    super::$name(backend).await;
                }
            }
        }
    )*};
}

/// A fresh, empty database of one kind and a store open on it.
pub struct Backend {
    /// The store under test.
    pub store: Arc<dyn Store>,
    /// The same store, concretely.
    pub kind: Concrete,
    /// Keeps the database alive; removes it when dropped.
    place: Place,
}

/// The concrete store, for the few checks that read tables directly.
#[derive(Clone)]
pub enum Concrete {
    Sqlite(Arc<SqliteStore>),
    Postgres(Arc<PgStore>),
}

enum Place {
    Sqlite(tempfile::TempDir),
    Postgres(PgDatabase),
}

impl Backend {
    /// A new SQLite database.
    pub async fn sqlite() -> Backend {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(&dir.path().join("q.db")).await.unwrap());
        Backend {
            store: store.clone(),
            kind: Concrete::Sqlite(store),
            place: Place::Sqlite(dir),
        }
    }

    /// A new PostgreSQL database, or `None` (with a note) when `VTRIAGE_TEST_PG` is not set.
    pub async fn postgres() -> Option<Backend> {
        let db = PgDatabase::create().await?;
        let store = Arc::new(PgStore::open(&db.url).await.unwrap());
        Some(Backend {
            store: store.clone(),
            kind: Concrete::Postgres(store),
            place: Place::Postgres(db),
        })
    }

    /// Another store on the same database, as a second process (or a restarted one) has.
    pub async fn open_again(&self) -> Arc<dyn Store> {
        match &self.place {
            Place::Sqlite(dir) => {
                Arc::new(SqliteStore::open(&dir.path().join("q.db")).await.unwrap())
            }
            Place::Postgres(db) => Arc::new(PgStore::open(&db.url).await.unwrap()),
        }
    }

    /// Closes the store's connections (as a crash or exit would).
    pub async fn close(&self) {
        match &self.kind {
            Concrete::Sqlite(s) => s.close().await,
            Concrete::Postgres(s) => s.close().await,
        }
    }

    /// Rows in a table.
    pub async fn rows(&self, table: &str) -> i64 {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        match &self.kind {
            Concrete::Sqlite(s) => sqlx::query_scalar(AssertSqlSafe(sql))
                .fetch_one(s.read_pool())
                .await
                .unwrap(),
            Concrete::Postgres(s) => sqlx::query_scalar(AssertSqlSafe(sql))
                .fetch_one(s.pool())
                .await
                .unwrap(),
        }
    }
}

/// A uniquely named database on the test server, dropped (with its connections) when this is.
pub struct PgDatabase {
    /// URL of the new database.
    pub url: String,
    admin: String,
    name: String,
}

impl PgDatabase {
    /// Creates a database, or says the test is skipped when no server is configured.
    pub async fn create() -> Option<PgDatabase> {
        let Ok(admin) = std::env::var(PG_ENV) else {
            eprintln!("skipped: {PG_ENV} not set (run `eval \"$(scripts/postgres)\"` first)");
            return None;
        };
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "vt_test_{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            rand::random::<u32>()
        );
        let mut conn = PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("cannot reach the PostgreSQL server in {PG_ENV}: {e}"));
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        let mut url = url::Url::parse(&admin).unwrap();
        url.set_path(&name);
        Some(PgDatabase {
            url: url.to_string(),
            admin,
            name,
        })
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which cannot be blocked on: a thread of its own
        // with its own small runtime removes the database.
        let (admin, name) = (self.admin.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut conn = PgConnection::connect(&admin).await?;
                sqlx::query(AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await?;
                conn.close().await
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("could not drop the test database {}: {e}", self.name);
        }
    }
}
