//! Parent side: spawning worker processes (re-exec of this binary), sending them commands,
//! collecting and merging their reports.

use std::collections::BTreeMap;
use std::io;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::hist::Hist;
use crate::worker::WorkerSpec;

struct Proc {
    child: Child,
    stdin: ChildStdin,
    out: Lines<BufReader<ChildStdout>>,
}

pub(crate) struct Workers {
    procs: Vec<Proc>,
}

impl Workers {
    pub(crate) async fn spawn(specs: &[WorkerSpec]) -> io::Result<Workers> {
        let exe = std::env::current_exe()?;
        let mut procs = Vec::new();
        for s in specs {
            let mut child = Command::new(&exe)
                .arg("__worker")
                .arg(serde_json::to_string(s).unwrap())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()?;
            let stdin = child.stdin.take().unwrap();
            let out = BufReader::new(child.stdout.take().unwrap()).lines();
            procs.push(Proc { child, stdin, out });
        }
        Ok(Workers { procs })
    }

    pub(crate) fn len(&self) -> usize {
        self.procs.len()
    }

    pub(crate) async fn send(&mut self, cmd: &Value) -> io::Result<()> {
        let line = format!("{cmd}\n");
        for p in &mut self.procs {
            p.stdin.write_all(line.as_bytes()).await?;
            p.stdin.flush().await?;
        }
        Ok(())
    }

    /// Reads the next event `ev` from every worker (skipping others).
    pub(crate) async fn recv(&mut self, ev: &str, timeout: Duration) -> io::Result<Vec<Value>> {
        let mut res = Vec::new();
        let end = tokio::time::Instant::now() + timeout;
        for (i, p) in self.procs.iter_mut().enumerate() {
            loop {
                let line = tokio::time::timeout_at(end, p.out.next_line())
                    .await
                    .map_err(|_| {
                        io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("worker {i}: no '{ev}' in time"),
                        )
                    })??;
                let Some(line) = line else {
                    return Err(io::Error::other(format!("worker {i} exited before '{ev}'")));
                };
                let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                if v["ev"] == ev {
                    res.push(v);
                    break;
                }
            }
        }
        Ok(res)
    }

    /// Tells the workers how many events went to each channel and collects their results
    /// (deliveries, losses, latency), waiting up to `drain_ms` for late deliveries.
    pub(crate) async fn finish(
        &mut self,
        published: &[u64],
        drain_ms: u64,
    ) -> Result<Vec<Value>, String> {
        self.cmd(
            json!({"cmd": "finish", "published": published}),
            "result",
            drain_ms,
        )
        .await
        .map_err(|e| e.to_string())
    }

    pub(crate) async fn cmd(
        &mut self,
        cmd: Value,
        ev: &str,
        timeout_ms: u64,
    ) -> io::Result<Vec<Value>> {
        let mut cmd = cmd;
        cmd["timeout_ms"] = json!(timeout_ms);
        self.send(&cmd).await?;
        self.recv(ev, Duration::from_millis(timeout_ms + 15_000))
            .await
    }

    pub(crate) async fn shutdown(mut self) {
        let _ = self.send(&json!({"cmd": "exit"})).await;
        for p in &mut self.procs {
            if tokio::time::timeout(Duration::from_secs(5), p.child.wait())
                .await
                .is_err()
            {
                let _ = p.child.kill().await;
            }
        }
    }
}

pub(crate) fn sum(rs: &[Value], k: &str) -> u64 {
    rs.iter().map(|r| r[k].as_u64().unwrap_or(0)).sum()
}
pub(crate) fn min_nz(rs: &[Value], k: &str) -> u64 {
    rs.iter()
        .filter_map(|r| r[k].as_u64())
        .filter(|v| *v > 0)
        .min()
        .unwrap_or(0)
}
pub(crate) fn max(rs: &[Value], k: &str) -> u64 {
    rs.iter().filter_map(|r| r[k].as_u64()).max().unwrap_or(0)
}
pub(crate) fn hist(rs: &[Value], k: &str) -> Hist {
    let mut h = Hist::new();
    for r in rs {
        h.merge(&Hist::from_json(&r[k]));
    }
    h
}
pub(crate) fn errors(rs: &[Value]) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for r in rs {
        if let Some(o) = r["errors"].as_object() {
            for (k, v) in o {
                *m.entry(k.clone()).or_insert(0) += v.as_u64().unwrap_or(0);
            }
        }
    }
    m
}
