//! The `command` executor: one program run per job.
//!
//! Protocol (documented in the README):
//! - stdin: the job's input JSON, then end of file;
//! - environment: only `PATH`, `HOME`, `LANG`, `TZ`, `TMPDIR` from the worker (never its
//!   database credentials), the kind's configured `env`, and `STUDIO_JOB_ID`,
//!   `STUDIO_JOB_KIND`, `STUDIO_JOB_USER_ID`, `STUDIO_JOB_ATTEMPT`, `STUDIO_JOB_MAX_ATTEMPTS`;
//! - stdout: lines `@progress <0-100> [message]` report progress; everything else, taken
//!   together, must be one JSON document (or nothing), which becomes the job's result;
//! - exit 0 succeeds; exit 65 (`EX_DATAERR`: the input is unusable) fails the job for good; any
//!   other exit status or a signal is a retryable failure. The error is the tail of stderr.
//!
//! The program runs under a [supervisor](super::supervisor), in its own process group. A timeout,
//! a cancellation or a shutdown stops it and every descendant gracefully (SIGTERM, then SIGKILL
//! after two seconds); a lost lease, or the worker's death by any means, kills them at once.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, anyhow};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

use super::supervisor::{
    self, EXIT_CANNOT_EXECUTE, EXIT_NOT_FOUND, KILL_GRACE, STOP_BYTE, SUPERVISE_ARG,
};
use super::{Handler, HandlerError, JobContext};
use crate::config::CommandExecutor;

/// Exit status meaning "this input can never work" (sysexits `EX_DATAERR`).
pub const EXIT_PERMANENT: i32 = 65;
/// What users read when the program could not be started (operators get the cause).
const CANNOT_START: &str = "the program could not be started";
/// How much of a non-JSON stdout is kept for operators.
const STDOUT_TAIL: usize = 2048;
/// Largest stdout accepted (the result column's limit).
const STDOUT_LIMIT: usize = 1024 * 1024;
/// How much of stderr is kept for the error message.
const STDERR_TAIL: usize = 2048;
/// How long a supervisor may take beyond the kill grace to exit after a stop request before
/// the worker kills it (it never should: this is a last resort against a wedged supervisor).
const SUPERVISOR_SLACK: Duration = Duration::from_secs(3);
/// Variables passed through from the worker's environment.
const PASSED_THROUGH: &[&str] = &["PATH", "HOME", "LANG", "TZ", "TMPDIR"];

/// Runs a configured program per job.
#[derive(Debug, Clone)]
pub struct CommandHandler {
    supervisor: PathBuf,
    argv: Vec<String>,
    working_dir: Option<PathBuf>,
    env: BTreeMap<String, String>,
}

impl CommandHandler {
    /// A handler running `argv` (program first).
    ///
    /// # Errors
    /// If `argv` is empty, or this executable cannot supervise programs (its `main` does not
    /// call [`supervise_if_requested`](super::supervise_if_requested)).
    pub fn new(argv: Vec<String>) -> anyhow::Result<Self> {
        if argv.first().is_none_or(|p| p.is_empty()) {
            return Err(anyhow!("the command executor needs a program"));
        }
        Ok(CommandHandler {
            supervisor: supervisor::executable()?,
            argv,
            working_dir: None,
            env: BTreeMap::new(),
        })
    }

    /// From the settings of `kind`, checking now that the program exists and is executable, so
    /// that a mistake stops start-up instead of failing users' jobs.
    ///
    /// # Errors
    /// No command configured, or its program missing or not executable (the key named).
    pub fn from_settings(kind: &str, settings: &CommandExecutor) -> anyhow::Result<Self> {
        if settings.command.first().is_none_or(|p| p.is_empty()) {
            return Err(crate::config::ConfigError::Invalid {
                key: format!("kinds.{kind}.command"),
                value: "(none)".to_owned(),
                reason: "the command executor needs a program".to_owned(),
            }
            .into());
        }
        let mut handler = CommandHandler::new(settings.command.clone())?;
        handler.working_dir = settings.working_dir.clone();
        handler.env = settings.env.clone();
        // Configuration problems (exit code 2), named by their key.
        if let Some(dir) = &handler.working_dir
            && !dir.is_dir()
        {
            return Err(crate::config::ConfigError::Invalid {
                key: format!("kinds.{kind}.working_dir"),
                value: dir.display().to_string(),
                reason: "no such directory".to_owned(),
            }
            .into());
        }
        handler
            .check_program()
            .map_err(|reason| crate::config::ConfigError::Invalid {
                key: format!("kinds.{kind}.command"),
                value: handler.argv[0].clone(),
                reason,
            })?;
        Ok(handler)
    }

    /// Whether the program can be started: found (as a path, relative to the working
    /// directory, or on the `PATH` it will get) and executable.
    fn check_program(&self) -> Result<(), String> {
        let program = Path::new(&self.argv[0]);
        let candidates: Vec<PathBuf> = if self.argv[0].contains('/') {
            vec![match &self.working_dir {
                Some(dir) if program.is_relative() => dir.join(program),
                _ => program.to_path_buf(),
            }]
        } else {
            let path = self
                .env
                .get("PATH")
                .cloned()
                .or_else(|| std::env::var("PATH").ok())
                .unwrap_or_default();
            std::env::split_paths(&path)
                .map(|dir| dir.join(program))
                .collect()
        };
        let mut found_unexecutable = false;
        for candidate in &candidates {
            let Ok(meta) = std::fs::metadata(candidate) else {
                continue;
            };
            if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                return Ok(());
            }
            found_unexecutable = true;
        }
        Err(if found_unexecutable {
            "the program is not an executable file".to_owned()
        } else if self.argv[0].contains('/') {
            "no such program".to_owned()
        } else {
            "no such program on the PATH".to_owned()
        })
    }

    fn command(&self, job: &JobContext) -> Command {
        let mut cmd = Command::new(&self.supervisor);
        cmd.arg(SUPERVISE_ARG)
            .args(&self.argv)
            .env_clear()
            .envs(
                PASSED_THROUGH
                    .iter()
                    .filter_map(|k| std::env::var(k).ok().map(|v| (*k, v))),
            )
            .envs(&self.env)
            .env("STUDIO_JOB_ID", job.id.to_string())
            .env("STUDIO_JOB_KIND", &job.kind)
            .env("STUDIO_JOB_USER_ID", job.user_id.to_string())
            .env("STUDIO_JOB_ATTEMPT", job.attempt.to_string())
            .env("STUDIO_JOB_MAX_ATTEMPTS", job.max_attempts.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group: a terminal's Ctrl-C reaches the worker, which drains, not the job.
            // No kill_on_drop: when the job is dropped (lease lost), the control pipe closes and
            // the supervisor kills the program's whole tree, which a SIGKILL to it would not.
            .process_group(0);
        if let Some(dir) = &self.working_dir {
            cmd.current_dir(dir);
        }
        cmd
    }
}

#[async_trait::async_trait]
impl Handler for CommandHandler {
    async fn run(&self, job: JobContext) -> Result<Value, HandlerError> {
        let mut child = self.command(&job).spawn().map_err(|err| {
            // A missing program or directory stays missing; anything else (no processes
            // left, say) may clear.
            let permanent = matches!(
                err.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
            );
            let err = anyhow::Error::new(err)
                .context(format!("starting {}", self.argv[0]))
                .context(CANNOT_START);
            if permanent {
                HandlerError::Permanent(err)
            } else {
                HandlerError::Retryable(err)
            }
        })?;
        let mut control = child
            .stdin
            .take()
            .context("control pipe not captured")
            .context(CANNOT_START)
            .map_err(HandlerError::Retryable)?;
        hand_over(&mut control, &job)
            .await
            .context(CANNOT_START)
            .map_err(HandlerError::Retryable)?;

        let io = exchange(&mut child, &job);
        let cancelled = job.cancel.clone();
        let (stdout, stderr) = tokio::select! {
            result = io => result?,
            () = cancelled.cancelled() => {
                stop(&mut child, &mut control).await;
                return Err(HandlerError::retryable("stopped: the job was cancelled or timed out"));
            }
        };
        let status = child
            .wait()
            .await
            .context("waiting for the program")
            .map_err(HandlerError::Retryable)?;
        drop(control);

        if status.success() {
            return parse_result(&stdout).map_err(HandlerError::Permanent);
        }
        let tail = String::from_utf8_lossy(&stderr);
        let tail = tail.trim();
        // Users read the exit status; operators read stderr too.
        let what = match status.code() {
            Some(code @ (EXIT_NOT_FOUND | EXIT_CANNOT_EXECUTE)) => {
                format!("{CANNOT_START} (exit status {code})")
            }
            Some(code) => format!("exit status {code}"),
            None => "killed by a signal".to_owned(),
        };
        let err = if tail.is_empty() {
            anyhow!("{what}")
        } else {
            anyhow!("{tail}").context(what)
        };
        // 65: the program judged the input unusable; 126/127: the program (or one it runs)
        // cannot be started, which retrying the same attempt would only repeat.
        match status.code() {
            Some(EXIT_PERMANENT | EXIT_NOT_FOUND | EXIT_CANNOT_EXECUTE) => {
                Err(HandlerError::Permanent(err))
            }
            _ => Err(HandlerError::Retryable(err)),
        }
    }
}

/// Send the input to the supervisor, which starts the program only once all of it arrived.
async fn hand_over(control: &mut ChildStdin, job: &JobContext) -> anyhow::Result<()> {
    let input = serde_json::to_vec(&job.input)?;
    let mut frame = format!("{}\n", input.len()).into_bytes();
    frame.extend_from_slice(&input);
    control
        .write_all(&frame)
        .await
        .context("handing the input to the program's supervisor")?;
    control.flush().await?;
    Ok(())
}

/// Ask the supervisor for a graceful stop (SIGTERM, SIGKILL after the grace) and wait for it;
/// a supervisor that does not exit in time is killed.
async fn stop(child: &mut Child, control: &mut ChildStdin) {
    let _ = control.write_all(&[STOP_BYTE]).await;
    let _ = control.flush().await;
    if tokio::time::timeout(KILL_GRACE + SUPERVISOR_SLACK, child.wait())
        .await
        .is_err()
    {
        tracing::error!("the program's supervisor did not stop in time; killing it");
        let _ = child.start_kill();
    }
}

/// Read stdout (handling progress lines) and the tail of stderr until both close. Output over
/// the limit fails the job for good: the same program on the same input would repeat it.
async fn exchange(child: &mut Child, job: &JobContext) -> Result<(Vec<u8>, Vec<u8>), HandlerError> {
    let stdout = child
        .stdout
        .take()
        .context("stdout not captured")
        .map_err(HandlerError::Retryable)?;
    let mut stderr = child
        .stderr
        .take()
        .context("stderr not captured")
        .map_err(HandlerError::Retryable)?;
    let read_out = async {
        let mut lines = BufReader::new(stdout).lines();
        let mut out = Vec::new();
        while let Some(line) = lines.next_line().await.map_err(|err| {
            HandlerError::Retryable(anyhow::Error::new(err).context("reading the program's output"))
        })? {
            if let Some(report) = line.strip_prefix("@progress ") {
                let (percent, message) = parse_progress(report);
                if let Some(percent) = percent {
                    job.progress(percent, message).await;
                }
                continue;
            }
            if out.len() + line.len() > STDOUT_LIMIT {
                return Err(HandlerError::permanent(format!(
                    "the program's output exceeds {STDOUT_LIMIT} bytes"
                )));
            }
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
        Ok(out)
    };
    let read_err = async {
        let mut tail = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = stderr.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            tail.extend_from_slice(&chunk[..n]);
            if tail.len() > STDERR_TAIL {
                tail.drain(..tail.len() - STDERR_TAIL);
            }
        }
        Ok::<_, anyhow::Error>(tail)
    };
    let (out, err) = tokio::join!(read_out, read_err);
    Ok((
        out?,
        err.context("reading the program's errors")
            .map_err(HandlerError::Retryable)?,
    ))
}

/// `42 rendering frame 3` → (Some(42), Some("rendering frame 3")).
fn parse_progress(report: &str) -> (Option<u8>, Option<&str>) {
    let report = report.trim();
    let (number, rest) = report.split_once(' ').unwrap_or((report, ""));
    let percent = number
        .parse::<f64>()
        .ok()
        .map(|p| p.clamp(0.0, 100.0).round() as u8);
    let message = Some(rest.trim()).filter(|m| !m.is_empty());
    (percent, message)
}

fn parse_result(stdout: &[u8]) -> anyhow::Result<Value> {
    let text = String::from_utf8_lossy(stdout);
    let text = text.trim();
    if text.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(text).map_err(|err| {
        // Keep what it printed (its tail) for operators, so the work leaves a trace.
        let start = text.len().saturating_sub(STDOUT_TAIL);
        let start = (start..=text.len())
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(text.len());
        anyhow!("{err}; stdout ends with: {}", &text[start..])
            .context("the program exited 0 but its output is not one JSON document")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_parse_percent_and_message() {
        assert_eq!(
            parse_progress("42 rendering frame 3"),
            (Some(42), Some("rendering frame 3"))
        );
        assert_eq!(parse_progress("150"), (Some(100), None));
        assert_eq!(parse_progress("12.6"), (Some(13), None));
        assert_eq!(parse_progress("soon"), (None, None));
    }

    #[test]
    fn stdout_must_be_json_or_empty() {
        assert_eq!(parse_result(b"  \n").unwrap(), Value::Null);
        assert_eq!(parse_result(b"{\"a\": 1}\n").unwrap()["a"], 1);
        assert!(parse_result(b"done!").is_err());
    }
}
