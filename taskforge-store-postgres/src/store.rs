//! The store: a connection pool over one schema of one database.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use taskforge_core::store::StoreError;
use tokio::sync::watch;
use tokio_postgres::config::Host;
use tokio_postgres::NoTls;

use crate::batch::Batcher;
use crate::config::PostgresConfig;
use crate::error::{backend, OpenError};
use crate::events::{self, AdmitAnswer, AdmitRequest};
use crate::notify::Notifier;
use crate::runs::{self, ClaimAnswer, ClaimRequest, CommitAnswer, CommitRequest};
use crate::schema::{self, Sql};

/// A Taskforge store in one schema of a PostgreSQL database. Clones share
/// one connection pool; stores opened on one schema by any number of
/// processes share the data.
///
/// See the [crate docs](crate) for the guarantees and an example.
#[derive(Clone)]
pub struct PostgresStore {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) pool: Pool,
    pub(crate) sql: Arc<Sql>,
    /// Claims, commits and admissions, grouped (see [`crate::batch`]).
    pub(crate) batches: Batches,
    pub(crate) schema: String,
    pub(crate) address: String,
    pub(crate) pg_config: tokio_postgres::Config,
    pub(crate) runtime: tokio::runtime::Handle,
    /// The notification listener, started by the first subscriber.
    pub(crate) wakeups: OnceLock<watch::Receiver<u64>>,
}

/// The batchers of the hot writes.
pub(crate) struct Batches {
    pub(crate) claims: Batcher<ClaimRequest, ClaimAnswer>,
    pub(crate) commits: Batcher<CommitRequest, CommitAnswer>,
    pub(crate) admissions: Batcher<AdmitRequest, AdmitAnswer>,
}

/// The most requests of one batch.
const MAX_BATCH: usize = 256;

impl Batches {
    /// Batchers with `lanes` lanes each, on `pool`.
    fn start(
        runtime: &tokio::runtime::Handle,
        pool: &Pool,
        sql: &Arc<Sql>,
        notifier: &Arc<Notifier>,
        lanes: usize,
    ) -> Self {
        macro_rules! batcher {
            ($run:path) => {{
                let (pool, sql, notifier) = (pool.clone(), Arc::clone(sql), Arc::clone(notifier));
                Batcher::start(runtime, lanes, MAX_BATCH, move |requests| {
                    let (pool, sql, notifier) =
                        (pool.clone(), Arc::clone(&sql), Arc::clone(&notifier));
                    async move { $run(&pool, &sql, &notifier, requests).await }
                })
            }};
        }
        Self {
            claims: batcher!(runs::run_claims),
            commits: batcher!(runs::run_commits),
            admissions: batcher!(events::run_admissions),
        }
    }
}

impl PostgresStore {
    /// Opens the store in schema `taskforge` of the database at `url` (a
    /// `postgres://` URL or a libpq key-value string), creating and
    /// migrating the schema as needed. See [`connect_with`](Self::connect_with).
    ///
    /// # Errors
    /// As [`connect_with`](Self::connect_with).
    pub async fn connect(url: &str) -> Result<Self, OpenError> {
        Self::connect_with(PostgresConfig::new(url)).await
    }

    /// Opens the store as `config` says: connects, creates the schema if
    /// missing and applies the migrations it lacks (once, whatever the
    /// number of processes opening it at once).
    ///
    /// # Errors
    /// [`OpenError::InvalidUrl`] or [`OpenError::InvalidSchema`] for bad
    /// settings, [`OpenError::Connect`] if the server cannot be reached,
    /// [`OpenError::NewerSchema`] if a newer release migrated the schema,
    /// [`OpenError::Migrate`] if migrating failed, [`OpenError::NoRuntime`]
    /// outside a Tokio runtime.
    pub async fn connect_with(config: PostgresConfig) -> Result<Self, OpenError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| OpenError::NoRuntime)?;
        let sql = Arc::new(Sql::new(&config.schema)?);
        let mut pg_config =
            tokio_postgres::Config::from_str(&config.url).map_err(|e| OpenError::InvalidUrl {
                reason: e.to_string(),
            })?;
        if pg_config.get_connect_timeout().is_none() {
            pg_config.connect_timeout(config.connect_timeout);
        }
        if pg_config.get_application_name().is_none() {
            pg_config.application_name("taskforge");
        }
        // The batch statements take arrays, whose sizes the planner cannot
        // see: a custom plan per call costs more than it saves (measured:
        // a fifth of the server's CPU per run), so every plan is generic.
        let mut options = pg_config.get_options().unwrap_or_default().to_owned();
        options.push_str(" -c plan_cache_mode=force_generic_plan");
        if !config.synchronous_commit {
            options.push_str(" -c synchronous_commit=off");
        }
        pg_config.options(options.trim_start());
        let address = address(&pg_config);

        // One connection first, to report an unreachable server as such and
        // to migrate before anything else runs.
        let (mut client, connection) =
            pg_config
                .connect(NoTls)
                .await
                .map_err(|source| OpenError::Connect {
                    address: address.clone(),
                    source,
                })?;
        let driver = runtime.spawn(connection);
        let migrated = schema::migrate(&mut client, &config.schema, &address).await;
        drop(client);
        let _ = driver.await;
        migrated?;

        let manager = Manager::from_config(
            pg_config.clone(),
            NoTls,
            ManagerConfig {
                // A connection broken while checked out (a server restart)
                // is caught by the cheap check and replaced.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| OpenError::Pool {
                address: address.clone(),
                reason: e.to_string(),
            })?;
        let notifier = Arc::new(Notifier::start(&runtime, pool.clone(), sql.channel.clone()));
        let batches = Batches::start(&runtime, &pool, &sql, &notifier, config.lanes());
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                sql,
                batches,
                schema: config.schema,
                address,
                pg_config,
                runtime,
                wakeups: OnceLock::new(),
            }),
        })
    }

    /// The schema the store's tables live in.
    #[must_use]
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    /// The server's address (hosts and ports, never a password).
    #[must_use]
    pub fn address(&self) -> &str {
        &self.inner.address
    }

    /// Drops the store's schema and everything in it. Other stores open on
    /// the schema fail from then on. Meant for tests that give each case
    /// a schema of its own.
    ///
    /// # Errors
    /// [`StoreError::Backend`] if the server refuses or cannot be reached.
    pub async fn drop_schema(&self) -> Result<(), StoreError> {
        let quoted = schema::quote_identifier(&self.inner.schema).map_err(backend)?;
        let client = self.client().await?;
        client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {quoted} CASCADE"))
            .await
            .map_err(backend)
    }

    /// A pooled connection.
    pub(crate) async fn client(&self) -> Result<Object, StoreError> {
        self.inner.pool.get().await.map_err(backend)
    }
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = self.inner.pool.status();
        f.debug_struct("PostgresStore")
            .field("address", &self.inner.address)
            .field("schema", &self.inner.schema)
            .field("connections", &status.size)
            .field("max_connections", &status.max_size)
            .finish()
    }
}

/// The hosts and ports of `config`, as `host:port` joined by commas.
fn address(config: &tokio_postgres::Config) -> String {
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = ports
                .get(i)
                .or_else(|| ports.first())
                .copied()
                .unwrap_or(5432);
            match host {
                Host::Tcp(name) => format!("{name}:{port}"),
                Host::Unix(path) => format!("{}:{port}", path.display()),
            }
        })
        .collect();
    if hosts.is_empty() {
        "<no host>".to_owned()
    } else {
        hosts.join(",")
    }
}
