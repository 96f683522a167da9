//! The `studio-worker` binary: parse arguments, load configuration, start logging, dispatch.

use std::process::ExitCode;

use clap::Parser;
use studio_worker::cli::{self, Cli};
use studio_worker::config::Settings;
use studio_worker::telemetry;

fn main() -> ExitCode {
    // Before anything else: this executable is also the supervisor of `command` programs.
    studio_worker::handlers::supervise_if_requested();
    let args = Cli::parse();
    let settings = match Settings::load(args.config.as_deref()) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("studio-worker: {err}");
            return ExitCode::from(2);
        }
    };
    if let Err(err) = telemetry::init(&settings.log, std::io::stderr) {
        eprintln!("studio-worker: {err:#}");
        return ExitCode::from(2);
    }
    let settings_format = settings.log.format;
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
    match runtime.block_on(cli::dispatch(args.command, settings, args.acting_as)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Said once: as a log event where logs are JSON (containers), else on stderr.
            let report = cli::report(&err);
            if settings_format == studio_worker::config::LogFormat::Json {
                tracing::error!(error.message = %report.message, error.hint = report.hint, "stopped");
            } else {
                eprintln!("studio-worker: {report}");
            }
            ExitCode::from(report.exit_code)
        }
    }
}
