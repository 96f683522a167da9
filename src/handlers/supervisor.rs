//! The supervisor that stands between the worker and every `command` program, so that a worker
//! that dies by any means (SIGKILL, the kernel's OOM killer, a crash) leaves nothing running.
//!
//! A process cannot clean up after its own SIGKILL, and the kernel's parent-death signal reaches
//! only a direct child. So each program runs under a small supervisor: this same executable,
//! started again with [`SUPERVISE_ARG`] and the program's argv. Its stdin is the *control pipe*,
//! whose only writer is the worker:
//!
//! 1. `<length>\n` and then exactly `length` bytes: the program's input. The program is started
//!    only once all of it has arrived, so it never runs on incomplete input.
//! 2. While the program runs, the byte `t` asks for a graceful stop: SIGTERM to the program's
//!    process group and every descendant, SIGKILL after [`KILL_GRACE`].
//! 3. End of file (the worker closed the pipe, or the kernel closed it because the worker died)
//!    kills the whole tree with SIGKILL at once: another replica may take the job over soon.
//!
//! The supervisor is a child subreaper (Linux), so descendants that leave the program's process
//! group (daemons, `setsid`) are re-parented to it and still found. When the program exits,
//! whatever it left running is killed, and the supervisor exits with the program's status (or
//! dies by the program's signal), which the worker reads as the program's own.
//!
//! The supervisor is synchronous and tiny: no async runtime, no configuration, no database.

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

/// The first argument that turns this executable into a supervisor.
pub const SUPERVISE_ARG: &str = "__studio-supervise";
/// Between SIGTERM and SIGKILL on a graceful stop.
pub const KILL_GRACE: Duration = Duration::from_secs(2);
/// Byte on the control pipe asking for a graceful stop.
pub const STOP_BYTE: u8 = b't';
/// Largest input accepted on the control pipe (the column allows 1 MiB of JSON).
const MAX_INPUT: usize = 64 * 1024 * 1024;
/// Exit statuses when the program could not be started (as a shell reports them); the command
/// handler reads them as "cannot start".
pub(super) const EXIT_NOT_FOUND: i32 = 127;
pub(super) const EXIT_CANNOT_EXECUTE: i32 = 126;
/// Exit status when the control pipe did not deliver a complete input (the worker is gone).
const EXIT_NO_INPUT: i32 = 125;

/// Set once this process has passed through [`supervise_if_requested`], which proves that the
/// executable can act as a supervisor.
static READY: AtomicBool = AtomicBool::new(false);

/// Call first thing in `main` of any executable that runs `command` kinds: when the process was
/// started as a supervisor it supervises its program and exits (never returning); otherwise it
/// returns at once and records that this executable can supervise.
pub fn supervise_if_requested() {
    let mut args = std::env::args_os();
    if args.nth(1).as_deref() == Some(OsStr::new(SUPERVISE_ARG)) {
        let argv: Vec<OsString> = args.collect();
        std::process::exit(supervise(&argv));
    }
    READY.store(true, Ordering::Release);
}

/// The executable to start as a supervisor: this one.
///
/// # Errors
/// When `main` did not call [`supervise_if_requested`], or the executable cannot be found.
pub(crate) fn executable() -> anyhow::Result<PathBuf> {
    if !READY.load(Ordering::Acquire) {
        anyhow::bail!(
            "the command executor runs each program under a supervisor (this executable, started again): \
             call studio_worker::handlers::supervise_if_requested() first thing in main()"
        );
    }
    // /proc/self/exe still names this binary after a package upgrade replaced or deleted it.
    let proc_exe = PathBuf::from("/proc/self/exe");
    if cfg!(target_os = "linux") && proc_exe.exists() {
        return Ok(proc_exe);
    }
    Ok(std::env::current_exe()?)
}

/// Supervise `argv` (program first); returns the exit status to leave with.
fn supervise(argv: &[OsString]) -> i32 {
    let Some((program, args)) = argv.split_first() else {
        eprintln!("supervisor: no program given");
        return EXIT_CANNOT_EXECUTE;
    };
    #[cfg(target_os = "linux")]
    if let Err(err) = nix::sys::prctl::set_child_subreaper(true) {
        eprintln!("supervisor: cannot become a subreaper ({err}); escaped descendants may survive");
    }
    let Some(input) = read_input() else {
        return EXIT_NO_INPUT;
    };

    let mut child = match Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .process_group(0)
        .spawn()
    {
        Ok(child) => child,
        Err(err) => {
            eprintln!("cannot start {}: {err}", program.to_string_lossy());
            return if err.kind() == std::io::ErrorKind::NotFound {
                EXIT_NOT_FOUND
            } else {
                EXIT_CANNOT_EXECUTE
            };
        }
    };
    let tree = Tree {
        group: Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX)),
    };
    if let Some(mut stdin) = child.stdin.take() {
        // A program that does not read its input closes the pipe early: not an error.
        std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
    }
    std::thread::spawn(move || watch_control(tree));

    let status = child.wait();
    // Whatever the program left behind goes with it.
    tree.kill();
    match status {
        Ok(status) => {
            if let Some(code) = status.code() {
                return code;
            }
            // Without an exit code, a Unix status always carries the signal.
            let Some(signal) = status.signal() else {
                return EXIT_CANNOT_EXECUTE;
            };
            if let Ok(sig) = Signal::try_from(signal) {
                // Die the way the program died, so the worker reads it as the program's.
                let _ = kill(Pid::this(), sig);
            }
            128 + signal
        }
        Err(err) => {
            eprintln!("supervisor: waiting for the program: {err}");
            EXIT_CANNOT_EXECUTE
        }
    }
}

/// Read `<length>\n<bytes>` from the control pipe; `None` if it ended early or is malformed.
fn read_input() -> Option<Vec<u8>> {
    let stdin = std::io::stdin();
    let mut control = stdin.lock();
    let mut header = String::new();
    control.read_line(&mut header).ok()?;
    let length: usize = header.trim_end_matches('\n').parse().ok()?;
    if length > MAX_INPUT {
        eprintln!("supervisor: input of {length} bytes refused");
        return None;
    }
    let mut input = vec![0; length];
    control.read_exact(&mut input).ok()?;
    Some(input)
}

/// Follow the control pipe until it ends: a stop byte stops the tree gracefully, the end of the
/// pipe kills it at once.
fn watch_control(tree: Tree) {
    let stdin = std::io::stdin();
    let mut control = stdin.lock();
    let mut byte = [0u8; 1];
    loop {
        match control.read(&mut byte) {
            Ok(0) => break,
            Ok(_) if byte[0] == STOP_BYTE => tree.terminate(KILL_GRACE),
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    tree.kill();
}

/// The program's process group and every process descended from the supervisor.
#[derive(Clone, Copy)]
struct Tree {
    group: Pid,
}

impl Tree {
    fn signal(self, signal: Signal) -> usize {
        // ESRCH (already gone) is the normal case for the group once the program exited.
        let _ = killpg(self.group, signal);
        let descendants = descendants();
        for pid in &descendants {
            let _ = kill(*pid, signal);
        }
        descendants.len()
    }

    /// SIGTERM everything, SIGKILL whatever is still there after `grace`.
    fn terminate(self, grace: Duration) {
        self.signal(Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if descendants().is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }

    /// SIGKILL everything, again until nothing is left (a process may fork while we look).
    fn kill(self) {
        for _ in 0..100 {
            if self.signal(Signal::SIGKILL) == 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Live (not zombie) processes descended from this one.
#[cfg(target_os = "linux")]
fn descendants() -> Vec<Pid> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    // (pid, parent, zombie)
    let table: Vec<(i32, i32, bool)> = entries
        .filter_map(|entry| {
            let pid: i32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (state, parent) = parse_stat(&stat)?;
            Some((pid, parent, state == 'Z'))
        })
        .collect();
    let mut found = Vec::new();
    let mut frontier = vec![std::process::id() as i32];
    while let Some(parent) = frontier.pop() {
        for &(pid, ppid, zombie) in &table {
            if ppid == parent && !found.contains(&Pid::from_raw(pid)) {
                frontier.push(pid);
                if !zombie {
                    found.push(Pid::from_raw(pid));
                }
            }
        }
    }
    found
}

#[cfg(not(target_os = "linux"))]
fn descendants() -> Vec<Pid> {
    Vec::new()
}

/// `(state, parent pid)` from a `/proc/<pid>/stat` line; the command name may hold spaces and
/// parentheses, so fields are counted from the last `)`.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn parse_stat(stat: &str) -> Option<(char, i32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let parent = fields.next()?.parse().ok()?;
    Some((state, parent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_even_with_odd_command_names() {
        assert_eq!(parse_stat("4242 (sh) S 17 4242 4242 0 -1"), Some(('S', 17)));
        assert_eq!(parse_stat("7 (a) b (c)) Z 1 7 7 0 -1"), Some(('Z', 1)));
        assert_eq!(parse_stat("garbage"), None);
    }
}
