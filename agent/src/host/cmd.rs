//! Running programs: argv only (never a shell), a controlled environment, a timeout, captured
//! output, and each output line handed to a callback as it arrives (so a package manager's
//! progress reaches the operator while it runs).
//!
//! Every command started goes into the runner's history. Tests read it to prove what ran, and
//! above all what did not (an up-to-date host runs no package manager at all).

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// `PATH` of every command: system directories only, whatever the agent was started with.
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// For queries (`dpkg-query`, `rpm -q`, `systemctl is-active`).
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(120);
/// For package installs: a slow mirror is slow, but not forever.
pub const INSTALL_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Commands remembered per runner (one runner lives as long as one validated spec).
const MAX_HISTORY: usize = 10_000;
/// Captured output kept per stream; later lines still go to the callback.
const MAX_CAPTURE: usize = 1 << 20;
/// After the program exits, how long to wait for its pipes to close (a daemon it started may
/// keep them open forever).
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// One program with its arguments and environment additions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    program: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    timeout: Duration,
}

impl Cmd {
    pub fn new(program: impl Into<String>) -> Cmd {
        Cmd {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            timeout: QUERY_TIMEOUT,
        }
    }

    pub fn arg(mut self, a: impl Into<String>) -> Cmd {
        self.args.push(a.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Adds a variable to the command's environment (which otherwise holds only `PATH` and
    /// `LC_ALL=C`, so output is parseable and nothing of the agent's environment leaks).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Cmd {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn timeout(mut self, t: Duration) -> Cmd {
        self.timeout = t;
        self
    }

    pub fn program(&self) -> &str {
        &self.program
    }

    pub fn argv(&self) -> Vec<String> {
        std::iter::once(self.program.clone())
            .chain(self.args.iter().cloned())
            .collect()
    }
}

/// For plans and messages: the command as an operator would type it (quoted where needed).
/// Never executed through a shell.
impl std::fmt::Display for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let words: Vec<String> = self.argv().iter().map(|w| quote(w)).collect();
        f.write_str(&words.join(" "))
    }
}

fn quote(w: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=:,+@%~".contains(c);
    if !w.is_empty() && w.chars().all(plain) {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', r"'\''"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// What a finished command left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// The last lines of stderr (or stdout), for an error message.
    pub fn tail(&self) -> String {
        let text = if self.stderr.trim().is_empty() {
            &self.stdout
        } else {
            &self.stderr
        };
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let from = lines.len().saturating_sub(5);
        lines[from..].join(" | ")
    }
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CmdError {
    #[error("cannot start `{program}`: {error}")]
    Spawn {
        program: String,
        error: String,
        not_found: bool,
    },
    #[error("`{cmd}` did not finish within {secs} s and was killed")]
    Timeout { cmd: String, secs: u64 },
    #[error("`{cmd}`: {error}")]
    Io { cmd: String, error: String },
}

/// Starts commands and remembers each one it started.
#[derive(Debug, Clone, Default)]
pub struct Runner {
    history: Arc<Mutex<Vec<Vec<String>>>>,
}

impl Runner {
    pub fn new() -> Runner {
        Runner::default()
    }

    /// Every command started so far, as argv, oldest first.
    pub fn history(&self) -> Vec<Vec<String>> {
        self.history.lock().map(|h| h.clone()).unwrap_or_default()
    }

    /// Runs and captures, without a line callback.
    pub fn output(&self, cmd: &Cmd) -> Result<Output, CmdError> {
        self.run(cmd, &mut |_, _| {})
    }

    /// Runs `cmd` to completion, calling `on_line` with each line of its output as it comes.
    /// A non-zero exit is not an error here: the caller decides what the code means.
    pub fn run(
        &self,
        cmd: &Cmd,
        on_line: &mut dyn FnMut(Stream, &str),
    ) -> Result<Output, CmdError> {
        if let Ok(mut h) = self.history.lock()
            && h.len() < MAX_HISTORY
        {
            h.push(cmd.argv());
        }
        let mut command = Command::new(&cmd.program);
        command
            .args(&cmd.args)
            .env_clear()
            .env("PATH", PATH)
            .env("LC_ALL", "C")
            .envs(cmd.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so a timeout kills what it started too (dpkg, scripts).
            .process_group(0);
        let mut child = command.spawn().map_err(|e| CmdError::Spawn {
            program: cmd.program.clone(),
            error: e.to_string(),
            not_found: e.kind() == std::io::ErrorKind::NotFound,
        })?;
        let (tx, rx) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            forward(out, Stream::Stdout, tx.clone());
        }
        if let Some(err) = child.stderr.take() {
            forward(err, Stream::Stderr, tx.clone());
        }
        drop(tx);

        let deadline = Instant::now() + cmd.timeout;
        let mut stdout = String::new();
        let mut stderr = String::new();
        let mut exited: Option<(std::process::ExitStatus, Instant)> = None;
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok((stream, line)) => {
                    on_line(stream, &line);
                    let buf = match stream {
                        Stream::Stdout => &mut stdout,
                        Stream::Stderr => &mut stderr,
                    };
                    if buf.len() < MAX_CAPTURE {
                        buf.push_str(&line);
                        buf.push('\n');
                    }
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // Both pipes closed: only the exit status is left to collect.
                    if exited.is_none() {
                        let remaining = deadline.saturating_duration_since(Instant::now());
                        match wait_until(&mut child, remaining) {
                            Some(status) => exited = Some((status, Instant::now())),
                            None => return Err(kill(&mut child, cmd)),
                        }
                    }
                    break;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            match exited {
                None => match child.try_wait() {
                    Ok(Some(status)) => exited = Some((status, Instant::now())),
                    Ok(None) if Instant::now() >= deadline => return Err(kill(&mut child, cmd)),
                    Ok(None) => {}
                    Err(e) => {
                        return Err(CmdError::Io {
                            cmd: cmd.to_string(),
                            error: e.to_string(),
                        });
                    }
                },
                // Exited, but something it started still holds the pipes: stop reading.
                Some((_, at)) if at.elapsed() > DRAIN_GRACE => break,
                Some(_) => {}
            }
        }
        let code = exited.and_then(|(s, _)| s.code());
        Ok(Output {
            code,
            stdout,
            stderr,
        })
    }
}

/// Sends each line of `pipe` to `tx` from a thread of its own (invalid UTF-8 is replaced).
fn forward(pipe: impl Read + Send + 'static, stream: Stream, tx: mpsc::Sender<(Stream, String)>) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    let line = line.trim_end_matches(['\n', '\r']).to_string();
                    if tx.send((stream, line)).is_err() {
                        break;
                    }
                }
            }
        }
    });
}

fn wait_until(
    child: &mut std::process::Child,
    within: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) if Instant::now() >= deadline => return None,
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => return None,
        }
    }
}

/// Kills the command's whole process group and reaps it.
fn kill(child: &mut std::process::Child, cmd: &Cmd) -> CmdError {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = child.kill();
    let _ = child.wait();
    CmdError::Timeout {
        cmd: cmd.to_string(),
        secs: cmd.timeout.as_secs(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_streams_codes_and_lines() -> Result<(), CmdError> {
        let r = Runner::new();
        let mut lines = Vec::new();
        let out = r.run(
            &Cmd::new("sh").args(["-c", "echo one; echo two >&2; echo three; exit 3"]),
            &mut |s, l| lines.push((s, l.to_string())),
        )?;
        assert_eq!(out.code, Some(3));
        assert_eq!(out.stdout, "one\nthree\n");
        assert_eq!(out.stderr, "two\n");
        assert_eq!(lines.len(), 3);
        assert!(lines.contains(&(Stream::Stderr, "two".into())));
        assert_eq!(r.history().len(), 1);
        Ok(())
    }

    #[test]
    fn environment_is_controlled() -> Result<(), CmdError> {
        let out = Runner::new().output(&Cmd::new("env").env("KAGENT_X", "1"))?;
        let mut vars: Vec<&str> = out.stdout.lines().collect();
        vars.sort();
        assert_eq!(vars, ["KAGENT_X=1", "LC_ALL=C", &format!("PATH={PATH}")]);
        Ok(())
    }

    #[test]
    fn arguments_are_never_a_shell() -> Result<(), CmdError> {
        let out = Runner::new().output(&Cmd::new("echo").arg("$(id); `x` *"))?;
        assert_eq!(out.stdout, "$(id); `x` *\n");
        Ok(())
    }

    #[test]
    fn timeout_kills_the_process_group() {
        let started = Instant::now();
        let err = Runner::new().output(
            &Cmd::new("sh")
                .args(["-c", "sleep 30 & sleep 30"])
                .timeout(Duration::from_millis(300)),
        );
        assert!(matches!(err, Err(CmdError::Timeout { .. })), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_daemon_holding_the_pipes_does_not_hang_the_runner() -> Result<(), CmdError> {
        let started = Instant::now();
        let out = Runner::new().output(&Cmd::new("sh").args(["-c", "sleep 4 & echo started"]))?;
        assert!(out.success());
        assert_eq!(out.stdout, "started\n");
        // Not the 4 s of the background sleep: the runner stops reading after the grace.
        assert!(started.elapsed() < Duration::from_millis(3500));
        Ok(())
    }

    #[test]
    fn missing_program_is_a_spawn_error() {
        let err = Runner::new().output(&Cmd::new("/nonexistent/kagent-x"));
        assert!(matches!(
            err,
            Err(CmdError::Spawn {
                not_found: true,
                ..
            })
        ));
    }

    #[test]
    fn display_quotes_for_reading_only() {
        let c = Cmd::new("dnf").args(["install", "-y", "a b", "it's"]);
        assert_eq!(c.to_string(), r#"dnf install -y 'a b' 'it'\''s'"#);
    }
}
