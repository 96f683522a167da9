//! The `studio-worker` binary: parse arguments, load configuration, start logging, dispatch.

use std::process::ExitCode;

use clap::Parser;
use studio_worker::cli::{self, Cli};
use studio_worker::config::Settings;
use studio_worker::telemetry;

fn main() -> ExitCode {
    let args = Cli::parse();
    let settings = match Settings::load(args.config.as_deref()) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("studio-worker: {err}");
            return ExitCode::from(2);
        }
    };
    // Validated by Settings::load, so format() cannot fail here; fall back to human anyway.
    let format = settings
        .log
        .format()
        .unwrap_or(studio_worker::config::LogFormat::Human);
    if let Err(err) = telemetry::init(&settings.log, format, std::io::stderr) {
        eprintln!("studio-worker: {err:#}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("studio-worker: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::dispatch(args.command, settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Said once: as a log event where logs are JSON (containers), else on stderr.
            let report = cli::report(&err);
            if format == studio_worker::config::LogFormat::Json {
                tracing::error!(error.message = %report.message, error.hint = report.hint, "stopped");
            } else {
                eprintln!("studio-worker: {report}");
            }
            ExitCode::from(report.exit_code)
        }
    }
}
