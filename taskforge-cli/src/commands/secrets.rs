//! `taskforge secrets list|set|delete`. Values go to the server and never
//! come back: the listing has names, versions and dates only.

use std::io::{IsTerminal, Read};
use std::path::Path;

use serde_json::{json, Value};

use crate::client::{segments, Error};
use crate::output::{self, emit, emit_json, Table};
use crate::{Ctx, Done, SecretsCommand};

/// The largest value read from a file or stdin: the server's limit is
/// 64 KiB, and reading stops a little past it rather than taking a huge
/// input whole.
const MAX_VALUE_BYTES: u64 = 64 * 1024 + 2;

pub(crate) async fn run(ctx: &Ctx, command: SecretsCommand) -> Result<Done, Error> {
    match command {
        SecretsCommand::List => list(ctx).await,
        SecretsCommand::Set {
            name,
            value,
            from_file,
            stdin,
        } => {
            let value = match (value, from_file) {
                (Some(value), _) => value,
                (None, Some(file)) => read_file(&file)?,
                (None, None) if stdin => read_stdin()?,
                // clap requires one of the three.
                (None, None) => return Err(Error::other("no value given")),
            };
            if value.is_empty() {
                return Err(Error::other(format!(
                    "the value of secret {name:?} is empty; nothing was stored"
                )));
            }
            let stored = ctx
                .api
                .put(&secret_path(&name)?, &json!({ "value": value }))
                .await?;
            if ctx.json {
                emit_json(&stored);
            } else {
                emit(&format!(
                    "stored {} version {}\n",
                    stored["name"].as_str().unwrap_or(&name),
                    output::text(&stored["version"])
                ));
            }
            Ok(Done::Ok)
        }
        SecretsCommand::Delete { name } => {
            ctx.api.delete(&secret_path(&name)?).await?;
            if ctx.json {
                emit_json(&json!({ "name": name, "deleted": true }));
            } else {
                emit(&format!("deleted {name}\n"));
            }
            Ok(Done::Ok)
        }
    }
}

/// `/api/v1/secrets/<name>`, each part of the name escaped, its `/` kept.
fn secret_path(name: &str) -> Result<String, Error> {
    Ok(format!(
        "/api/v1/secrets/{}",
        segments(name).map_err(Error::Other)?
    ))
}

async fn list(ctx: &Ctx) -> Result<Done, Error> {
    let secrets = ctx.api.get("/api/v1/secrets", &[]).await?;
    if ctx.json {
        emit_json(&secrets);
        return Ok(Done::Ok);
    }
    emit(&secrets_table(ctx, &secrets));
    Ok(Done::Ok)
}

fn secrets_table(ctx: &Ctx, secrets: &Value) -> String {
    let mut table = Table::new(&["NAME", "VERSION", "CREATED", "ROTATED"]);
    for secret in secrets.as_array().into_iter().flatten() {
        table.row(vec![
            output::text(&secret["name"]).into(),
            output::text(&secret["version"]).into(),
            output::time(&secret["created_at"]).into(),
            output::time(&secret["rotated_at"]).into(),
        ]);
    }
    if table.is_empty() {
        return "no secrets\n".to_owned();
    }
    table.render(ctx.style)
}

fn read_file(path: &Path) -> Result<String, Error> {
    let file = std::fs::File::open(path)
        .map_err(|e| Error::other(format!("cannot read {}: {e}", path.display())))?;
    value_from(file, &path.display().to_string())
}

fn read_stdin() -> Result<String, Error> {
    if std::io::stdin().is_terminal() {
        eprintln!("reading the value from stdin; end it with Ctrl-D");
    }
    value_from(std::io::stdin().lock(), "stdin")
}

/// The value read from `reader`, as UTF-8 text, one trailing newline
/// (`\n` or `\r\n`) dropped.
fn value_from(reader: impl Read, source: &str) -> Result<String, Error> {
    let mut bytes = Vec::new();
    reader
        .take(MAX_VALUE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::other(format!("cannot read {source}: {e}")))?;
    if bytes.len() as u64 > MAX_VALUE_BYTES {
        return Err(Error::other(format!(
            "the value on {source} is over 64 KiB, the most a secret holds"
        )));
    }
    let mut text = String::from_utf8(bytes)
        .map_err(|_| Error::other(format!("the value on {source} is not UTF-8 text")))?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &[u8]) -> Result<String, String> {
        value_from(bytes, "test").map_err(|e| e.to_string())
    }

    #[test]
    fn one_trailing_newline_is_dropped() {
        assert_eq!(read(b"s3cret\n").unwrap(), "s3cret");
        assert_eq!(read(b"s3cret\r\n").unwrap(), "s3cret");
        assert_eq!(read(b"s3cret\n\n").unwrap(), "s3cret\n");
        assert_eq!(read(b"s3cret").unwrap(), "s3cret");
        assert_eq!(read(b"  spaced  ").unwrap(), "  spaced  ");
        assert_eq!(read(b"\n").unwrap(), "");
    }

    #[test]
    fn values_are_text_of_bounded_size() {
        assert!(read(&[0xff, 0xfe]).unwrap_err().contains("not UTF-8"));
        let big = vec![b'a'; 64 * 1024 + 3];
        assert!(read(&big).unwrap_err().contains("over 64 KiB"));
        // 64 KiB and its newline is still read (the server judges the size).
        let mut max = vec![b'a'; 64 * 1024];
        max.extend_from_slice(b"\r\n");
        assert_eq!(read(&max).unwrap().len(), 64 * 1024);
    }

    #[test]
    fn names_keep_their_parts() {
        assert_eq!(
            secret_path("deploy/token").unwrap(),
            "/api/v1/secrets/deploy/token"
        );
        assert!(secret_path("a//b").is_err());
    }
}
