//! The `avatar-proxy` binary: parse the command line, load settings, run.

use std::path::PathBuf;

use anyhow::Context;
use avatar_proxy::{Application, Settings};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "avatar-proxy",
    version,
    about = "Authenticated avatar caching proxy"
)]
struct Cli {
    /// Configuration file layered over the defaults (environment variables still win).
    #[arg(long, global = true, env = "AVATAR_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (the default).
    Serve,
    /// Print the effective configuration, secrets redacted.
    Config,
    /// Print the public key of a user id (reads the key secret like the service does).
    Key {
        /// The user id (JWT `sub`, identity record `id`).
        user_id: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("avatar-proxy: {e}");
            std::process::exit(2);
        }
    };
    // A mistyped variable leaves its default in force: say so, whatever the command.
    let unknown = avatar_proxy::config::unknown_variables(std::env::vars());
    match cli.command.unwrap_or(Command::Serve) {
        Command::Config => {
            warn_unknown(&unknown);
            print!("{}", settings.redacted_toml());
            Ok(())
        }
        Command::Key { user_id } => {
            warn_unknown(&unknown);
            // Never create a secret here: a new one would print a key the service does not use.
            let found =
                avatar_proxy::keys::load_secret(&settings.server.key_secret, &settings.cache.dir)
                    .context("cannot read the key secret")?;
            let Some(secret) = found else {
                eprintln!(
                    "avatar-proxy: no key secret: set AVATAR_KEY_SECRET, or AVATAR_CACHE_DIR (now {}) \
                     to the cache directory of the running service, which keeps its generated secret",
                    settings.cache.dir.display()
                );
                std::process::exit(2);
            };
            println!(
                "{}",
                avatar_proxy::keys::KeyDeriver::new(&secret).key_for(&user_id)
            );
            Ok(())
        }
        Command::Serve => {
            avatar_proxy::telemetry::init_logging(settings.server.log_format);
            for warning in &unknown {
                tracing::warn!("{warning}");
            }
            let app = Application::build(settings)
                .await
                .context("start-up failed")?;
            app.run_until_stopped().await.context("server failed")
        }
    }
}

/// Unknown variables on stderr, for the commands that do not log.
fn warn_unknown(warnings: &[String]) {
    for warning in warnings {
        eprintln!("avatar-proxy: warning: {warning}");
    }
}
