//! [`SecretStore`]: sealed secrets, one row per `(name, version)` (see
//! `migrations/0004_secrets.sql`). The store keeps the sealed bytes as the
//! vault made them; no value or key reaches the server.

use async_trait::async_trait;
use chrono::DateTime;
use taskforge_core::store::{SealedSecret, SecretStore, StoreError};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use crate::codec::{big, nanos};
use crate::error::{backend, unique_violation};
use crate::PostgresStore;

/// The columns a record is read from, in the order [`sealed`] expects.
const COLUMNS: &str = "name, version, key_id, nonce, ciphertext, created_ns";

/// A record from a row of [`COLUMNS`].
fn sealed(row: &Row) -> Result<SealedSecret, StoreError> {
    let version: i64 = row.try_get(1).map_err(backend)?;
    Ok(SealedSecret {
        name: row.try_get(0).map_err(backend)?,
        version: u32::try_from(version)
            .map_err(|_| backend(format!("corrupt secret row: version {version}")))?,
        key_id: row.try_get(2).map_err(backend)?,
        nonce: row.try_get(3).map_err(backend)?,
        ciphertext: row.try_get(4).map_err(backend)?,
        created_at: DateTime::from_timestamp_nanos(row.try_get(5).map_err(backend)?),
    })
}

/// How a record is named in errors.
fn shown(name: &str, version: u32) -> String {
    format!("{name} version {version}")
}

impl PostgresStore {
    /// The records `sql` selects ([`COLUMNS`]).
    async fn query_secrets(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<SealedSecret>, StoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await.map_err(backend)?;
        let rows = client.query(&statement, params).await.map_err(backend)?;
        rows.iter().map(sealed).collect()
    }
}

#[async_trait]
impl SecretStore for PostgresStore {
    async fn insert_secret(&self, secret: &SealedSecret) -> Result<(), StoreError> {
        let table = &self.inner.sql.secrets_table;
        let sql = format!(
            "INSERT INTO {table} (name, version, key_id, nonce, ciphertext, created_at, created_ns)
             VALUES ($1, $2, $3, $4, $5,
                     timestamptz 'epoch' + ($6::bigint / 1000) * interval '1 microsecond', $6)"
        );
        let client = self.client().await?;
        let statement = client.prepare_cached(&sql).await.map_err(backend)?;
        let params: [&(dyn ToSql + Sync); 6] = [
            &secret.name,
            &big(secret.version)?,
            &secret.key_id,
            &secret.nonce,
            &secret.ciphertext,
            &nanos(secret.created_at),
        ];
        match client.execute(&statement, &params).await {
            Ok(_) => Ok(()),
            Err(e) if unique_violation(&e).is_some() => Err(StoreError::already_exists(
                "secret",
                shown(&secret.name, secret.version),
            )),
            Err(e) => Err(backend(e)),
        }
    }

    async fn get_secret(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<Option<SealedSecret>, StoreError> {
        let table = &self.inner.sql.secrets_table;
        let found = match version {
            Some(version) => {
                let sql = format!("SELECT {COLUMNS} FROM {table} WHERE name = $1 AND version = $2");
                self.query_secrets(&sql, &[&name, &big(version)?]).await?
            }
            None => {
                let sql = format!(
                    "SELECT {COLUMNS} FROM {table} WHERE name = $1 ORDER BY version DESC LIMIT 1"
                );
                self.query_secrets(&sql, &[&name]).await?
            }
        };
        Ok(found.into_iter().next())
    }

    async fn list_secret_versions(&self, name: &str) -> Result<Vec<SealedSecret>, StoreError> {
        let table = &self.inner.sql.secrets_table;
        let sql = format!("SELECT {COLUMNS} FROM {table} WHERE name = $1 ORDER BY version");
        self.query_secrets(&sql, &[&name]).await
    }

    async fn list_secret_names(&self) -> Result<Vec<String>, StoreError> {
        let table = &self.inner.sql.secrets_table;
        // The column's collation is "C": byte order.
        let sql = format!("SELECT DISTINCT name FROM {table} ORDER BY name");
        let client = self.client().await?;
        let statement = client.prepare_cached(&sql).await.map_err(backend)?;
        let rows = client.query(&statement, &[]).await.map_err(backend)?;
        rows.iter()
            .map(|row| row.try_get(0).map_err(backend))
            .collect()
    }

    async fn reseal_secret(
        &self,
        secret: &SealedSecret,
        expected_key_id: &str,
    ) -> Result<(), StoreError> {
        let table = &self.inner.sql.secrets_table;
        let version = big(secret.version)?;
        // A compare-and-set in one statement: the row lock makes a racing
        // reseal wait, then re-check the key id on the winner's row.
        let update = format!(
            "UPDATE {table} SET key_id = $3, nonce = $4, ciphertext = $5
             WHERE name = $1 AND version = $2 AND key_id = $6"
        );
        let params: [&(dyn ToSql + Sync); 6] = [
            &secret.name,
            &version,
            &secret.key_id,
            &secret.nonce,
            &secret.ciphertext,
            &expected_key_id,
        ];
        let client = self.client().await?;
        let statement = client.prepare_cached(&update).await.map_err(backend)?;
        if client.execute(&statement, &params).await.map_err(backend)? == 1 {
            return Ok(());
        }
        // Nothing changed: say why.
        let sql = format!("SELECT key_id FROM {table} WHERE name = $1 AND version = $2");
        let statement = client.prepare_cached(&sql).await.map_err(backend)?;
        let id = shown(&secret.name, secret.version);
        match client
            .query_opt(&statement, &[&secret.name, &version])
            .await
            .map_err(backend)?
        {
            None => Err(StoreError::not_found("secret", id)),
            Some(row) => {
                let stored: String = row.try_get(0).map_err(backend)?;
                Err(StoreError::conflict(
                    "secret",
                    id,
                    format!("sealed with key {stored}, not {expected_key_id}"),
                ))
            }
        }
    }

    async fn delete_secret(&self, name: &str) -> Result<usize, StoreError> {
        let table = &self.inner.sql.secrets_table;
        let sql = format!("DELETE FROM {table} WHERE name = $1");
        let client = self.client().await?;
        let statement = client.prepare_cached(&sql).await.map_err(backend)?;
        let removed = client
            .execute(&statement, &[&name])
            .await
            .map_err(backend)?;
        usize::try_from(removed).map_err(backend)
    }
}
