//! `taskforge runs artifacts|artifact`: what a run's steps stored, and one
//! artifact's bytes, checked against the SHA-256 the server gives.
//!
//! A download goes to a temporary file in the destination's directory and
//! is renamed into place only once complete and checked, so a failed one
//! leaves nothing behind. To stdout (`-o -`) it is checked before a byte is
//! written, from an anonymous temporary file.

use std::io::{Seek, Write};
use std::path::{Path, PathBuf};

use serde_json::json;
use sha2::{Digest, Sha256};

use super::path;
use super::STREAM_IDLE;
use crate::client::{segment, Error};
use crate::output::{self, emit, emit_json, Table};
use crate::{Ctx, Done};

/// Lists run `id`'s artifacts.
pub(crate) async fn list(ctx: &Ctx, id: &str) -> Result<Done, Error> {
    let artifacts = ctx
        .api
        .get(&format!("{}/artifacts", path("runs", id)), &[])
        .await?;
    if ctx.json {
        emit_json(&artifacts);
        return Ok(Done::Ok);
    }
    let mut table = Table::new(&["NAME", "STEP", "SIZE", "SHA256", "CREATED"]);
    for artifact in artifacts.as_array().into_iter().flatten() {
        let sha: String = artifact["sha256"]
            .as_str()
            .unwrap_or("-")
            .chars()
            .take(12)
            .collect();
        table.row(vec![
            output::text(&artifact["name"]).into(),
            output::text(&artifact["step_key"]).into(),
            artifact["size"]
                .as_u64()
                .map_or_else(|| "-".to_owned(), output::bytes)
                .into(),
            sha.into(),
            output::time(&artifact["created_at"]).into(),
        ]);
    }
    if table.is_empty() {
        emit("no artifacts\n");
    } else {
        emit(&table.render(ctx.style));
    }
    Ok(Done::Ok)
}

/// Where a download goes.
#[derive(Debug)]
enum Target {
    Stdout,
    File(PathBuf),
}

/// Downloads artifact `name` of run `id` to `output` (a file, a directory,
/// `-` for stdout; the name in the current directory by default).
pub(crate) async fn download(
    ctx: &Ctx,
    id: &str,
    name: &str,
    output: Option<&Path>,
    force: bool,
) -> Result<Done, Error> {
    let target = match output {
        Some(path) if path == Path::new("-") => Target::Stdout,
        Some(path) if path.is_dir() => Target::File(path.join(name)),
        Some(path) => Target::File(path.to_owned()),
        None => Target::File(PathBuf::from(name)),
    };
    if let Target::File(path) = &target {
        if !force && path.symlink_metadata().is_ok() {
            return Err(exists(path));
        }
    }
    let mut response = ctx
        .api
        .download(&format!("{}/artifacts/{}", path("runs", id), segment(name)))
        .await?;
    let expected = response
        .headers()
        .get("x-taskforge-sha256")
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase)
        .ok_or_else(|| {
            Error::other(format!(
                "the server sent artifact {name} without its x-taskforge-sha256 header; it cannot be checked"
            ))
        })?;
    let length = response.content_length();

    // Where the bytes go until they are checked.
    let (mut file, part) = match &target {
        Target::Stdout => (
            tempfile::tempfile().map_err(|e| io("a temporary file", &e))?,
            None,
        ),
        Target::File(path) => {
            let part = temporary_beside(path)?;
            (
                part.as_file()
                    .try_clone()
                    .map_err(|e| io(&part.path().display().to_string(), &e))?,
                Some(part),
            )
        }
    };
    let shown = match &target {
        Target::Stdout => "a temporary file".to_owned(),
        Target::File(path) => path.display().to_string(),
    };
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    loop {
        let chunk = match tokio::time::timeout(STREAM_IDLE, response.chunk()).await {
            Ok(chunk) => chunk.map_err(|e| {
                Error::other(format!(
                    "the download of {name} broke off after {size} bytes ({}); nothing was written",
                    ctx.api.transport(&e)
                ))
            })?,
            Err(_) => {
                return Err(Error::other(format!(
                    "the download of {name} stalled after {size} bytes; nothing was written"
                )))
            }
        };
        let Some(chunk) = chunk else { break };
        hasher.update(&chunk);
        file.write_all(&chunk).map_err(|e| io(&shown, &e))?;
        size += chunk.len() as u64;
    }
    if let Some(length) = length.filter(|l| *l != size) {
        return Err(Error::other(format!(
            "the download of {name} ended after {size} of {length} bytes; nothing was written"
        )));
    }
    let actual = hex::encode(hasher.finalize());
    if actual != expected {
        return Err(Error::other(format!(
            "the download of {name} does not match its SHA-256 (the server says {expected}, the bytes give {actual}); nothing was written"
        )));
    }
    match (target, part) {
        (Target::File(path), Some(part)) => {
            file.sync_all().map_err(|e| io(&shown, &e))?;
            drop(file);
            let placed = if force {
                part.persist(&path)
            } else {
                part.persist_noclobber(&path)
            };
            if let Err(e) = placed {
                return Err(if e.error.kind() == std::io::ErrorKind::AlreadyExists {
                    exists(&path)
                } else {
                    io(&shown, &e.error)
                });
            }
            if ctx.json {
                emit_json(&json!({
                    "name": name,
                    "path": path.display().to_string(),
                    "size": size,
                    "sha256": actual,
                }));
            } else {
                emit(&format!(
                    "wrote {} ({}, sha256 {} checked)\n",
                    path.display(),
                    output::bytes(size),
                    &actual[..12]
                ));
            }
        }
        _ => {
            file.rewind().map_err(|e| io(&shown, &e))?;
            let mut out = std::io::stdout().lock();
            if std::io::copy(&mut file, &mut out)
                .and_then(|_| out.flush())
                .is_err()
            {
                // A closed pipe (`| head`) ends the program quietly.
                std::process::exit(0);
            }
        }
    }
    Ok(Done::Ok)
}

/// A new temporary file in `path`'s directory, as a new file there would
/// be made (the umask applies), removed unless it is persisted.
fn temporary_beside(path: &Path) -> Result<tempfile::NamedTempFile, Error> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut builder = tempfile::Builder::new();
    builder.prefix(".taskforge-").suffix(".part");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    builder
        .tempfile_in(dir)
        .map_err(|e| io(&format!("a file in {}", dir.display()), &e))
}

fn exists(path: &Path) -> Error {
    Error::other(format!(
        "{} exists; pass --force to replace it",
        path.display()
    ))
}

fn io(what: &str, error: &std::io::Error) -> Error {
    Error::other(format!("cannot write {what}: {error}"))
}
