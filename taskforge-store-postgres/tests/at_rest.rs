//! No credential is stored in plaintext: after a workload that puts secrets
//! everywhere they could leak (signed webhooks and a rotation, a step that
//! echoes its secret in output, error, logs and progress), no row of any
//! table of the store's schema holds any of them, raw or in base64. Built
//! only when `TASKFORGE_PG_URL` is set (see `build.rs`).

#![cfg(taskforge_pg)]

mod common;

use taskforge_core::testing::at_rest::{find_any, leave_secrets_everywhere};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_row_of_the_store_holds_a_credential() {
    let schema = common::fresh_schema("tf_at_rest");
    let _drop = common::DropSchema(schema.clone());
    let store = common::open(&schema).await;
    let forbidden = leave_secrets_everywhere(store).await;

    let (client, connection) = tokio_postgres::connect(&common::url(), tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let tables = client
        .query(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1",
            &[&schema],
        )
        .await
        .expect("list tables");
    assert!(tables.len() >= 5, "the schema has its tables");
    let mut rows = 0;
    for table in tables {
        let table: String = table.get(0);
        let dump = client
            .query(
                &format!("SELECT t::text FROM \"{schema}\".\"{table}\" t"),
                &[],
            )
            .await
            .expect("read a table");
        for row in dump {
            rows += 1;
            let text: String = row.get(0);
            if let Some(found) = find_any(text.as_bytes(), &forbidden) {
                panic!(
                    "table {table} holds {:?} in plaintext: {text}",
                    String::from_utf8_lossy(found)
                );
            }
        }
    }
    assert!(rows > 10, "the workload wrote rows");
}
