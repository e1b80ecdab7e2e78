//! `ecr-vault`: back up ECR (or any OCI registry) into an Object Lock S3 vault, from a laptop
//! or CI, with the same engine the Lambda functions run.
//!
//! [`args`] parses, `commands/<command>.rs` calls the engine, [`output`] prints and picks the
//! exit code.

use std::process::ExitCode;

use clap::Parser;

mod args;
mod commands;
mod config;
mod credentials;
mod output;
mod progress;

use args::{Cli, LogFormat};

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(output::EXIT_RUN);
        }
    };
    match rt.block_on(commands::run(cli.command, cli.config)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(output::error_code(&e))
        }
    }
}
