//! `taskforge tokens create|list|revoke`.

use serde_json::{json, Value};

use super::path;
use crate::client::Error;
use crate::output::{self, emit, emit_json, Cell, Table};
use crate::{Ctx, Done, TokensCommand};

pub(crate) async fn run(ctx: &Ctx, command: TokensCommand) -> Result<Done, Error> {
    match command {
        TokensCommand::Create {
            name,
            scopes,
            workflows,
            expires_in,
        } => {
            let mut body = json!({ "name": name, "scopes": scopes });
            if !workflows.is_empty() {
                body["workflows"] = json!(workflows);
            }
            if let Some(secs) = expires_in {
                body["expires_in_secs"] = json!(secs);
            }
            let created = ctx.api.post("/api/v1/tokens", Some(&body)).await?;
            if ctx.json {
                emit_json(&created);
            } else {
                let token = &created["token"];
                emit(&format!(
                    "token {} ({}) created\nsecret (shown once, keep it): {}\n",
                    output::text(&token["id"]),
                    output::text(&token["name"]),
                    output::text(&created["secret"]),
                ));
            }
            Ok(Done::Ok)
        }
        TokensCommand::List => {
            let tokens = ctx.api.get("/api/v1/tokens", &[]).await?;
            if ctx.json {
                emit_json(&tokens);
                return Ok(Done::Ok);
            }
            let mut table = Table::new(&[
                "TOKEN",
                "NAME",
                "PREFIX",
                "SCOPES",
                "WORKFLOWS",
                "STATE",
                "CREATED",
                "LAST USED",
            ]);
            let now = chrono::Utc::now();
            for token in tokens.as_array().into_iter().flatten() {
                let list = |v: &Value| -> String {
                    v.as_array()
                        .map(|a| a.iter().map(output::text).collect::<Vec<_>>().join(","))
                        .unwrap_or_else(|| "all".to_owned())
                };
                let expired = token["expires_at"]
                    .as_str()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .is_some_and(|t| t <= now);
                let state = if !token["revoked_at"].is_null() {
                    "revoked"
                } else if expired {
                    "expired"
                } else {
                    "active"
                };
                table.row(vec![
                    output::text(&token["id"]).into(),
                    output::text(&token["name"]).into(),
                    output::text(&token["prefix"]).into(),
                    list(&token["scopes"]).into(),
                    list(&token["workflows"]).into(),
                    Cell::status(state),
                    output::time(&token["created_at"]).into(),
                    output::time(&token["last_used_at"]).into(),
                ]);
            }
            if table.is_empty() {
                emit("no tokens\n");
            } else {
                emit(&table.render(ctx.style));
            }
            Ok(Done::Ok)
        }
        TokensCommand::Revoke { id } => {
            let token = ctx
                .api
                .post(&format!("{}/revoke", path("tokens", &id)), None)
                .await?;
            if ctx.json {
                emit_json(&token);
            } else {
                emit(&format!(
                    "token {} ({}) {}\n",
                    output::text(&token["id"]),
                    output::text(&token["name"]),
                    ctx.style.status("revoked"),
                ));
            }
            Ok(Done::Ok)
        }
    }
}
