//! `steadycast`: a live channel that never goes dark. See `steadycast --help`.

mod api;
mod auth;
mod bench;
mod chaos;
mod cli;
mod client;
mod config;
mod demo;
mod http;
mod node;
mod ops;
mod tls;
mod web;

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    cli::init_logging(cli.log_format);
    match cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("steadycast: {e:#}");
            ExitCode::FAILURE
        }
    }
}
