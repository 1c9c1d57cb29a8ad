//! The command line of the `crm-api` binary: the global settings of [`Config`] and the
//! subcommands. Without a subcommand it serves, as it always has.

use clap::{Parser, Subcommand};
use crm_api::Config;
use crm_store::MigrateAction;

/// Shown under the options in `--help`.
const AFTER_HELP: &str = "\
Every option can also be set by its environment variable, or in a `.env` file in the \
current directory. A flag wins over the environment, and the environment over `.env`. \
RUST_LOG sets the log filter (default: info). See docs/configuration.md.";

/// `crm-api [OPTIONS] [COMMAND]`.
#[derive(Debug, Parser)]
#[command(
    name = "crm-api",
    version,
    about = "mini-crm: distributes customer contacts among operators",
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// The settings, valid before or after the subcommand.
    #[command(flatten)]
    pub config: Config,

    /// What to do; serving when left out.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Serve the HTTP API until SIGINT or SIGTERM (the default). Applies pending
    /// migrations first.
    Serve,
    /// Apply, revert or list the database migrations, then exit. Prints each migration
    /// as `applied` or `pending`.
    Migrate {
        /// What to do with the migrations.
        #[command(subcommand)]
        action: Migrate,
    },
    /// Print the OpenAPI document (as served at /openapi.json) to stdout and exit.
    Openapi,
}

/// `crm-api migrate …`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum Migrate {
    /// Apply every pending migration.
    Up,
    /// Revert the last N applied migrations.
    Down {
        /// How many migrations to revert.
        #[arg(default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        n: u32,
    },
    /// List the migrations without changing anything.
    Status,
    /// Drop every table and apply all migrations from scratch: destroys all data.
    Fresh,
}

impl From<Migrate> for MigrateAction {
    fn from(m: Migrate) -> Self {
        match m {
            Migrate::Up => Self::Up,
            Migrate::Down { n } => Self::Down(n),
            Migrate::Status => Self::Status,
            Migrate::Fresh => Self::Fresh,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("crm-api").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn no_subcommand_means_serve_and_flags_go_anywhere() {
        let cli = parse(&["--bind", "127.0.0.1:9000"]).expect("parses");
        assert_eq!(cli.command, None);
        assert_eq!(cli.config.bind.port(), 9000);

        let cli = parse(&["serve", "--bind", "127.0.0.1:9001"]).expect("parses");
        assert_eq!(cli.command, Some(Command::Serve));
        assert_eq!(cli.config.bind.port(), 9001);
    }

    #[test]
    fn migrate_takes_an_action_and_the_global_settings() {
        let cli = parse(&["migrate", "status", "--database-url", "sqlite://x.db"]).expect("parses");
        assert_eq!(
            cli.command,
            Some(Command::Migrate {
                action: Migrate::Status
            })
        );
        assert_eq!(cli.config.database_url.to_string(), "sqlite://x.db");

        let down = |args: &[&str]| match parse(args).expect("parses").command {
            Some(Command::Migrate { action }) => MigrateAction::from(action),
            other => panic!("not a migration: {other:?}"),
        };
        assert_eq!(down(&["migrate", "down"]), MigrateAction::Down(1));
        assert_eq!(down(&["migrate", "down", "3"]), MigrateAction::Down(3));
        assert_eq!(down(&["migrate", "fresh"]), MigrateAction::Fresh);
        assert_eq!(down(&["migrate", "up"]), MigrateAction::Up);
    }

    #[test]
    fn bad_input_is_refused() {
        for args in [
            &["migrate"][..],
            &["migrate", "down", "0"],
            &["migrate", "sideways"],
            &["--db-max-connections", "0"],
            &["--bind", "localhost"],
        ] {
            assert!(parse(args).is_err(), "{args:?} was accepted");
        }
    }

    #[test]
    fn every_setting_is_documented_and_in_the_env_example() {
        let docs = include_str!("../../../docs/configuration.md");
        let example = include_str!("../../../.env.example");
        for arg in Cli::command().get_arguments() {
            let Some(env) = arg.get_env().and_then(|e| e.to_str()) else {
                continue;
            };
            let flag = format!("--{}", arg.get_long().unwrap_or_default());
            assert!(
                docs.contains(&format!("| `{env}` | `{flag}` |")),
                "docs/configuration.md has no row for {env} / {flag}"
            );
            assert!(
                example.contains(&format!("# {env}=")),
                ".env.example does not list {env}"
            );
        }
    }

    #[test]
    fn help_shows_each_setting_with_its_variable_and_default() {
        let help = Cli::command().render_long_help().to_string();
        for needle in [
            "CRM_DATABASE_URL",
            "default: sqlite://crm.db?mode=rwc",
            "CRM_BIND",
            "default: 127.0.0.1:8000",
            "CRM_DB_MAX_CONNECTIONS",
            "CRM_DB_ACQUIRE_TIMEOUT_MS",
            "CRM_DB_STATEMENT_TIMEOUT_MS",
            "CRM_WRITE_QUEUE",
            "CRM_SQLITE_SYNC_NORMAL",
            "CRM_LOG_FORMAT",
            "default: text",
            ".env",
        ] {
            assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
        }
    }
}
