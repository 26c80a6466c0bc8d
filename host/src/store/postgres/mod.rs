//! The PostgreSQL backend: the same durable state as the redb file, on a database several
//! gateway nodes share.
//!
//! redb stays the default (one process, one file, nothing to run). This backend is for a
//! deployment that outgrows one box, and it is built on an existing engine rather than a
//! home-made cluster: the database's transactions are the outbox, its row locks
//! (`FOR UPDATE SKIP LOCKED`) hand each due delivery to one node at a time, and its clock
//! decides due times and leases, so nodes need not agree on theirs.
//!
//! Batching decides throughput here as group commit does for redb (measured on the project's
//! 2-core box: one commit per event costs 120–145 µs of server CPU; rows inserted through
//! `unnest` 9–14 µs each), so every operation takes a batch: [`queue::PgQueue::publish`] many
//! events in one transaction of multi-row statements, [`queue::PgQueue::claim`] up to a limit
//! of due deliveries in one statement, [`queue::PgQueue::settle`] a batch of attempt results.
//!
//! Every connection runs with a `statement_timeout` and an
//! `idle_in_transaction_session_timeout`, so a stuck node can never hold row locks (and with
//! them other nodes' work) for long.

pub mod claims;
pub mod due;
pub mod leader;
pub mod migrate;
pub mod queue;
pub mod reads;
pub mod retention;
pub mod shared;
pub mod txn;
pub mod writer;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

use super::StoreError;

/// Longest any one statement may run before the server cancels it.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest a connection may sit idle inside an open transaction before the server ends it
/// (and with it every row lock it held).
pub const IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);

/// How long getting a connection may take: connect, or wait for a free one in the pool.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A uuid column value for a typed id.
pub(crate) fn uuid(raw: u128) -> uuid::Uuid {
    uuid::Uuid::from_u128(raw)
}

/// A non-negative column value as the unsigned type the records use.
pub(crate) fn unsigned<T: TryFrom<i64> + Default>(value: impl Into<i64>) -> T {
    T::try_from(value.into()).unwrap_or_default()
}

/// The current-thread runtime a blocking thread (the queue writer's) drives its own
/// connection on.
pub(crate) fn blocking_runtime() -> Result<tokio::runtime::Runtime, StoreError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| StoreError::Unavailable {
            message: format!("cannot start the PostgreSQL writer's runtime: {err}"),
        })
}

/// A pool of connections to one PostgreSQL database; cheap to clone.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    config: tokio_postgres::Config,
}

impl PgStore {
    /// A pool of at most `pool_size` connections to the database at `url`
    /// (`postgresql://user@host:port/dbname`). Connections open lazily; call
    /// [`PgStore::check`] to find out now whether the database answers.
    pub fn connect(url: &str, pool_size: usize) -> Result<Self, StoreError> {
        let mut config: tokio_postgres::Config = url.parse().map_err(|err| StoreError::Config {
            message: format!("store.url is not a PostgreSQL connection URL: {err}"),
        })?;
        config
            .application_name("hookgate")
            .connect_timeout(CONNECT_TIMEOUT)
            .options(format!(
                "-c statement_timeout={} -c idle_in_transaction_session_timeout={}",
                STATEMENT_TIMEOUT.as_millis(),
                IDLE_IN_TRANSACTION_TIMEOUT.as_millis()
            ));
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|err| StoreError::Config {
                message: format!("cannot set up the PostgreSQL pool: {err}"),
            })?;
        Ok(Self { pool, config })
    }

    /// A connection from the pool.
    pub async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|err| StoreError::Unavailable {
                message: format!("cannot get a PostgreSQL connection: {err}"),
            })
    }

    /// Fails unless the database answers a query now.
    pub async fn check(&self) -> Result<(), StoreError> {
        self.client().await?.simple_query("SELECT 1").await?;
        Ok(())
    }

    /// A connection of its own outside the pool, driven on the current runtime, for `purpose`
    /// (named in the warning logged when the connection fails).
    pub(crate) async fn dedicated(
        &self,
        purpose: &'static str,
    ) -> Result<tokio_postgres::Client, StoreError> {
        let (client, connection) = self.config.connect(NoTls).await?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::warn!(error = %err, "the PostgreSQL connection of {purpose} failed");
            }
        });
        Ok(client)
    }

    /// The connection settings, for a connection of its own outside the pool (`LISTEN`).
    pub(crate) fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }
}
