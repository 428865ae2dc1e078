//! netmon: records which IPv4 hosts this server talks to.

use std::{
    io::{self, BufWriter, StdoutLock, Write as _},
    process::ExitCode,
};

use clap::Parser as _;

use netmon::{
    cli::{Cli, Command, generate},
    collect, graph, probe, report, rules,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let failure = cli.command.failure_status();
    match dispatch(cli.command) {
        Ok(code) => code,
        // A reader that went away (`netmon list | head`) is not an error.
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("netmon: {err:#}");
            ExitCode::from(failure)
        }
    }
}

/// Runs a command; `Ok` carries the exit status of commands whose status
/// is an answer (such as `diff`), errors are printed once by `main`.
fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run(args) => collect::run(&args.into())?,
        Command::Probe => probe::probe(&mut io::stdout().lock())?,
        Command::List(args) => to_stdout(|out| report::list(&args.into(), out))?,
        Command::Merge(args) => report::merge(&args.into())?,
        Command::Diff(args) => {
            let mut status = ExitCode::SUCCESS;
            to_stdout(|out| {
                status = report::diff(&args.into(), out)?;
                Ok(())
            })?;
            return Ok(status);
        }
        Command::Stats(args) => to_stdout(|out| report::stats(&args.into(), out))?,
        Command::Graph(args) => to_stdout(|out| graph::graph(&args.into(), out))?,
        Command::Rules(args) => to_stdout(|out| rules::rules(&args.into(), out))?,
        Command::Completions { shell } => {
            to_stdout(|out| Ok(generate::completions(shell, out)?))?;
        }
        Command::Man { dir } => generate::man_pages(&dir)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `report` on a buffered stdout and flushes it.
///
/// A reader that went away is not an error, and is handled here rather
/// than in `main` so that a command whose status is an answer (`diff`)
/// still gives it.
fn to_stdout(
    report: impl FnOnce(&mut BufWriter<StdoutLock<'static>>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut out = BufWriter::with_capacity(1 << 16, io::stdout().lock());
    match report(&mut out).and_then(|()| Ok(out.flush()?)) {
        Err(err) if is_broken_pipe(&err) => Ok(()),
        result => result,
    }
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
