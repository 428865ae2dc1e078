//! netmon: records which IPv4 hosts this server talks to.
mod cli;
mod ebpf;
mod peer;
mod probe;
mod procnet;
mod run;
mod store;

use std::{io, process::ExitCode};

use clap::Parser as _;

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match dispatch(cli.command) {
        Ok(code) => code,
        // A reader that went away (`netmon list | head`) is not an error.
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("netmon: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a command; `Ok` carries the exit status of commands whose status
/// is an answer (such as `diff`), errors are printed once by `main`.
fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run(args) => run::run(&args)?,
        Command::Probe => probe::probe(&mut io::stdout().lock())?,
    }
    Ok(ExitCode::SUCCESS)
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default))
        .format_target(false)
        .init();
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}
