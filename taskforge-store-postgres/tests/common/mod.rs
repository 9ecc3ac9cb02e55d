//! Shared by the PostgreSQL tests: a store over a fresh schema per case.

#![allow(dead_code, unreachable_pub)]

use taskforge_core::testing::Fixture;
use taskforge_store_postgres::{PostgresConfig, PostgresStore};

/// The server the tests use, from `TASKFORGE_PG_URL`.
pub fn url() -> String {
    std::env::var("TASKFORGE_PG_URL")
        .expect("TASKFORGE_PG_URL was set when these tests were built; set it again to run them")
}

/// A schema name no other test uses.
pub fn fresh_schema(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// A store over a new, empty schema.
pub async fn open(schema: &str) -> PostgresStore {
    PostgresStore::connect_with(PostgresConfig::new(url()).schema(schema).pool_size(8))
        .await
        .expect("open the PostgreSQL store")
}

/// Drops its schema when the case ends.
#[derive(Debug)]
pub struct DropSchema(pub String);

impl Drop for DropSchema {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which cannot block on a
        // future: a thread with its own runtime and connection does it.
        let schema = self.0.clone();
        let done = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime to drop the schema");
            runtime.block_on(async {
                let (client, connection) =
                    tokio_postgres::connect(&url(), tokio_postgres::NoTls).await?;
                tokio::spawn(connection);
                client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                    .await
            })
        })
        .join();
        if let Ok(Err(error)) = done {
            eprintln!("could not drop test schema {}: {error}", self.0);
        }
    }
}

/// A store over a fresh schema, dropped after the case.
pub async fn fixture() -> Fixture<PostgresStore> {
    let schema = fresh_schema("tf_test");
    let store = open(&schema).await;
    Fixture::with_guard(store, DropSchema(schema))
}
