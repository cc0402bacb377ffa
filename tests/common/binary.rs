//! The `crier` binary as a child process: started without inherited `CRIER_*` variables, its
//! stdout and stderr read line by line, signalled with `kill`, killed on drop.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_crier");

/// A command for the binary with no inherited `CRIER_*` variables.
pub fn crier() -> Command {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars() {
        if key.starts_with("CRIER_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// Runs the binary to completion (at most 10 s); returns exit code and stdout+stderr.
pub fn run_to_exit(cmd: &mut Command) -> (Option<i32>, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start crier");
    let (tx, rx) = mpsc::channel();
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = out.read_to_string(&mut text);
        let _ = err.read_to_string(&mut text);
        let _ = tx.send(text);
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for crier") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("crier did not exit within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("crier's output");
    (status.code(), output)
}

/// A running binary and its output lines, killed on drop.
pub struct Running {
    pub child: Child,
    lines: mpsc::Receiver<String>,
}

impl Running {
    pub fn start(cmd: &mut Command) -> Running {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start crier");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        let err = child.stderr.take().expect("stderr");
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx2.send(line);
            }
        });
        Running { child, lines }
    }

    /// Waits (at most 10 s) for an output line containing `needle`, and returns it.
    pub fn wait_for_line(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(line) => seen.push(line),
                Err(_) => panic!("no line with {needle:?} within 10 s; output: {seen:?}"),
            }
        }
    }

    /// Waits for `listening on HOST:PORT` and returns the address.
    pub fn listening_addr(&self) -> SocketAddr {
        let line = self.wait_for_line("listening on ");
        let at = line.find("listening on ").unwrap_or(0) + "listening on ".len();
        line[at..]
            .split_whitespace()
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("cannot parse the address in {line:?}"))
    }

    /// Every line still to come, until the binary closes stdout and stderr (at most 10 s).
    pub fn remaining_lines(&self) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut lines = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => lines.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => return lines,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("output still open after 10 s: {lines:?}")
                }
            }
        }
    }

    /// `kill -NAME` to the child.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits up to `within` for the child's exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for crier") {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "crier still running after {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits up to `within` for the exit code.
    pub fn terminate(&mut self, within: Duration) -> Option<i32> {
        self.signal("TERM");
        self.wait_exit(within)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
