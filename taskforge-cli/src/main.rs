//! `taskforge`: the command line of the Taskforge workflow engine. It talks
//! to a server's management API (`taskforge-http`) with an API token:
//!
//! ```text
//! export TASKFORGE_URL=http://127.0.0.1:8080 TASKFORGE_TOKEN=tf_...
//! taskforge runs list --workflow deploy-api --status failed
//! taskforge runs watch 0190c0de-...
//! taskforge --json events list | jq '.items[].id'
//! taskforge runs logs 0190c0de-... --follow
//! taskforge secrets set deploy/token --from-file token.txt
//! ```
//!
//! Tables for people, `--json` for scripts. Errors are one line on stderr
//! and exit status 1 (2 for a usage error, 3 when a watched run ends in
//! another status than `succeeded`).

mod client;
mod commands;
mod output;
mod sse;

use std::process::ExitCode;

use clap::{ArgGroup, Args, Parser, Subcommand};

use crate::client::{Api, Error};
use crate::output::Style;

/// The command line of the Taskforge workflow engine.
#[derive(Debug, Parser)]
#[command(name = "taskforge", version, about)]
pub(crate) struct Cli {
    /// The server's base URL.
    #[arg(
        long,
        env = "TASKFORGE_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    url: String,
    /// An API token (`tf_...`).
    #[arg(long, env = "TASKFORGE_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Print the server's JSON instead of tables (one JSON object a line
    /// for `runs watch` and `runs logs`).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Workflow runs: list, show, watch, logs, artifacts, start, cancel, retry.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Events (webhook deliveries, cron ticks, manual starts): list, show, replay.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Workflows and their versions: list, show, diff.
    #[command(subcommand)]
    Workflows(WorkflowsCommand),
    /// Triggers (webhooks, cron schedules): list, show.
    #[command(subcommand)]
    Triggers(TriggersCommand),
    /// API tokens: create, list, revoke.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Secrets for steps (values go in, never come out): list, set, delete.
    #[command(subcommand)]
    Secrets(SecretsCommand),
}

#[derive(Debug, Subcommand)]
pub(crate) enum RunsCommand {
    /// Lists runs, newest first.
    List(RunFilter),
    /// Shows a run with every step attempt.
    Show {
        /// The run's id.
        id: String,
    },
    /// Follows a run live until it finishes.
    Watch {
        /// The run's id.
        id: String,
    },
    /// Prints the log lines of a run's step attempts (all, or the chosen ones).
    Logs {
        /// The run's id.
        id: String,
        /// Only this step's attempts (its key).
        #[arg(long)]
        step: Option<String>,
        /// Only this attempt number (from 1) of each step.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        attempt: Option<u32>,
        /// Then follow the live stream, printing new lines until the run finishes.
        #[arg(long, short)]
        follow: bool,
    },
    /// Lists the artifacts a run's steps stored.
    Artifacts {
        /// The run's id.
        id: String,
    },
    /// Downloads one artifact, checking its SHA-256.
    Artifact {
        /// The run's id.
        id: String,
        /// The artifact's name.
        #[arg(value_parser = artifact_name)]
        name: String,
        /// Where to write it: a file, a directory, or `-` for stdout
        /// (default: the artifact's name, in the current directory).
        #[arg(long, short, value_name = "PATH")]
        output: Option<std::path::PathBuf>,
        /// Replace the file if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Starts a run of a workflow's latest (or a chosen) version.
    Start {
        /// The workflow's name or id.
        workflow: String,
        /// The run's input, as JSON (default `{}`).
        #[arg(long, short)]
        input: Option<String>,
        /// Run this version number instead of the latest.
        #[arg(long)]
        version: Option<u32>,
        /// Starting twice with one key gives one run.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Then follow it until it finishes, as `runs watch` does.
        #[arg(long)]
        watch: bool,
    },
    /// Asks a run to stop.
    Cancel {
        /// The run's id.
        id: String,
    },
    /// Sends a signal to a run, for its wait step waiting for `name`
    /// (whose output the payload becomes); a run waiting for it wakes.
    Signal {
        /// The run's id.
        id: String,
        /// The signal's name.
        #[arg(value_parser = signal_name)]
        name: String,
        /// The payload, as JSON (default `null`).
        #[arg(long, short)]
        payload: Option<String>,
    },
    /// Starts the run again: a new run of the same version with the same input.
    Retry {
        /// The run's id.
        id: String,
    },
}

#[derive(Debug, Args)]
pub(crate) struct RunFilter {
    /// Only this workflow's runs (name or id).
    #[arg(long, short)]
    pub(crate) workflow: Option<String>,
    /// Only runs in this status.
    #[arg(long, short, value_parser = ["queued", "running", "waiting", "succeeded", "failed", "cancelled", "timed_out"])]
    pub(crate) status: Option<String>,
    /// Only runs of this event.
    #[arg(long)]
    pub(crate) event: Option<String>,
    /// Only runs created at or after this time (RFC 3339).
    #[arg(long)]
    pub(crate) since: Option<String>,
    /// Oldest first.
    #[arg(long)]
    pub(crate) oldest_first: bool,
    #[command(flatten)]
    pub(crate) page: Paging,
}

#[derive(Debug, Args)]
pub(crate) struct Paging {
    /// At most this many (1 to 1000).
    #[arg(long, default_value_t = 50)]
    pub(crate) limit: usize,
    /// The cursor of the next page, as the previous page printed it.
    #[arg(long)]
    pub(crate) after: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum EventsCommand {
    /// Lists events, newest first.
    List(EventFilter),
    /// Shows an event: payload, kept headers, outcome and its runs.
    Show {
        /// The event's id.
        id: String,
    },
    /// Starts a new run from a stored event's payload.
    Replay {
        /// The event's id.
        id: String,
    },
}

#[derive(Debug, Args)]
pub(crate) struct EventFilter {
    /// Only this workflow's events (name or id).
    #[arg(long, short)]
    pub(crate) workflow: Option<String>,
    /// Only this trigger's events (id).
    #[arg(long)]
    pub(crate) trigger: Option<String>,
    /// Only events with this outcome.
    #[arg(long, value_parser = ["run_started", "filtered", "workflow_inactive", "trigger_disabled", "skipped", "rejected"])]
    pub(crate) outcome: Option<String>,
    /// Only events received at or after this time (RFC 3339).
    #[arg(long)]
    pub(crate) since: Option<String>,
    /// Oldest first.
    #[arg(long)]
    pub(crate) oldest_first: bool,
    #[command(flatten)]
    pub(crate) page: Paging,
}

#[derive(Debug, Subcommand)]
pub(crate) enum WorkflowsCommand {
    /// Lists workflows with their latest version.
    List,
    /// Shows a workflow: its versions and triggers, or one version's definition.
    Show {
        /// The workflow's name or id.
        workflow: String,
        /// Show this version's definition.
        #[arg(long, short)]
        version: Option<u32>,
    },
    /// What changed between two versions (by default, from the one before).
    Diff {
        /// The workflow's name or id.
        workflow: String,
        /// A version number.
        from: u32,
        /// Another version number; without it, `from` is compared with its predecessor.
        to: Option<u32>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum TriggersCommand {
    /// Lists triggers.
    List {
        /// Only this workflow's triggers (name or id).
        #[arg(long, short)]
        workflow: Option<String>,
    },
    /// Shows a trigger's configuration (secrets redacted by the server).
    Show {
        /// The trigger's id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum TokensCommand {
    /// Makes a token; its secret is printed this once.
    Create {
        /// A label for it.
        #[arg(long)]
        name: String,
        /// Its scopes (repeat or separate with commas).
        #[arg(long = "scope", required = true, value_delimiter = ',', value_parser = ["read", "run", "manage", "tokens"])]
        scopes: Vec<String>,
        /// Limit it to these workflows, by name (repeat or separate with commas).
        #[arg(long = "workflow", value_delimiter = ',')]
        workflows: Vec<String>,
        /// Seconds until it expires (never, without it).
        #[arg(long)]
        expires_in: Option<u64>,
    },
    /// Lists tokens, revoked ones included.
    List,
    /// Revokes a token: from the next request on, it is refused.
    Revoke {
        /// The token's id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum SecretsCommand {
    /// Lists secrets: names, versions and dates (never a value).
    List,
    /// Stores a new version of a secret (version 1 for a new name).
    ///
    /// Give the value on stdin or in a file, so that it stays out of the
    /// shell's history and the process list; one trailing newline is
    /// dropped.
    #[command(group(ArgGroup::new("source").required(true).args(["value", "from_file", "stdin"])))]
    Set {
        /// The secret's name (`/` separates parts, as in `deploy/token`).
        #[arg(value_parser = secret_name)]
        name: String,
        /// The value itself. Beware: it lands in your shell's history and
        /// is visible to other users in the process list; prefer --stdin or
        /// --from-file.
        #[arg(long)]
        value: Option<String>,
        /// Read the value from this file.
        #[arg(long, value_name = "PATH")]
        from_file: Option<std::path::PathBuf>,
        /// Read the value from standard input.
        #[arg(long)]
        stdin: bool,
    },
    /// Deletes every version of a secret.
    Delete {
        /// The secret's name.
        #[arg(value_parser = secret_name)]
        name: String,
    },
}

/// A secret name that can go in a URL path as it is meant (see
/// [`client::segments`]); the server judges the rest.
fn secret_name(text: &str) -> Result<String, String> {
    client::segments(text).map(|_| text.to_owned())
}

/// An artifact name: 1 to 255 bytes of `[A-Za-z0-9_.-]`, not starting with
/// a dot, as the server names them. Checked here too because it becomes a
/// file name when no `--output` is given.
/// A signal's name: `[A-Za-z0-9_.-]`, 1 to 128 bytes (so it goes in a URL
/// path as it is).
fn signal_name(text: &str) -> Result<String, String> {
    if text.is_empty() || text.len() > 128 {
        return Err("a signal name has 1 to 128 bytes".to_owned());
    }
    if let Some(c) = text
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(format!(
            "character {c:?} is not one of [A-Za-z0-9_.-] in a signal name"
        ));
    }
    Ok(text.to_owned())
}

fn artifact_name(text: &str) -> Result<String, String> {
    if text.is_empty() || text.len() > 255 {
        return Err("an artifact name has 1 to 255 bytes".to_owned());
    }
    if let Some(c) = text
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(format!(
            "character {c:?} is not one of [A-Za-z0-9_.-] in an artifact name"
        ));
    }
    if text.starts_with('.') {
        return Err("an artifact name does not start with a dot".to_owned());
    }
    Ok(text.to_owned())
}

/// What every command needs.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) api: Api,
    pub(crate) style: Style,
    pub(crate) json: bool,
}

/// How a command ended, when it did not fail.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Done {
    Ok,
    /// A watched run finished, not successfully.
    RunNotSucceeded,
}

async fn run(cli: Cli) -> Result<Done, Error> {
    let ctx = Ctx {
        api: Api::new(&cli.url, cli.token)?,
        style: Style::detect(),
        json: cli.json,
    };
    match cli.command {
        Command::Runs(command) => commands::runs::run(&ctx, command).await,
        Command::Events(command) => commands::events::run(&ctx, command).await,
        Command::Workflows(command) => commands::workflows::run(&ctx, command).await,
        Command::Triggers(command) => commands::triggers::run(&ctx, command).await,
        Command::Tokens(command) => commands::tokens::run(&ctx, command).await,
        Command::Secrets(command) => commands::secrets::run(&ctx, command).await,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(Done::Ok) => ExitCode::SUCCESS,
        Ok(Done::RunNotSucceeded) => ExitCode::from(3),
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_parse() {
        let cli = Cli::try_parse_from([
            "taskforge",
            "tokens",
            "create",
            "--name",
            "ci",
            "--scope",
            "read,run",
            "--json",
        ])
        .expect("parses");
        assert!(cli.json);
        let Command::Tokens(TokensCommand::Create { scopes, .. }) = cli.command else {
            panic!("tokens create");
        };
        assert_eq!(scopes, ["read", "run"]);
        assert!(Cli::try_parse_from(["taskforge", "runs", "list", "--status", "nope"]).is_err());
    }

    #[test]
    fn secrets_set_takes_exactly_one_source() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(["taskforge", "secrets", "set"].iter().chain(args))
                .map_err(|e| e.kind())
        };
        assert!(parse(&["deploy/token", "--stdin"]).is_ok());
        assert!(parse(&["deploy/token", "--value", "x"]).is_ok());
        assert!(parse(&["deploy/token", "--from-file", "f"]).is_ok());
        assert_eq!(
            parse(&["deploy/token"]).unwrap_err(),
            clap::error::ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            parse(&["deploy/token", "--stdin", "--value", "x"]).unwrap_err(),
            clap::error::ErrorKind::ArgumentConflict
        );
        assert_eq!(
            parse(&["a/../b", "--stdin"]).unwrap_err(),
            clap::error::ErrorKind::ValueValidation
        );
    }

    #[test]
    fn artifact_names_are_plain_file_names() {
        assert!(artifact_name("report-1.tar.gz").is_ok());
        for bad in ["", ".hidden", "..", "a/b", "../x", "a b"] {
            assert!(artifact_name(bad).is_err(), "{bad:?}");
        }
        let cli = Cli::try_parse_from(["taskforge", "runs", "artifact", "r", "x.bin", "-o", "-"])
            .expect("parses");
        let Command::Runs(RunsCommand::Artifact { output, force, .. }) = cli.command else {
            panic!("runs artifact");
        };
        assert_eq!(output.as_deref(), Some(std::path::Path::new("-")));
        assert!(!force);
    }
}
