//! `compare`: one scenario against several servers in one command, runs alternating
//! (A B A B …, a fresh server process per run), with the loopback floor measured in each
//! round, so that a comparison never mixes machines or moments. Prints each server's value of
//! the chosen figure per run, its median, its median ratio to the floor and to the first
//! server.

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::CompareArgs;

struct Server {
    name: String,
    /// A shell command; `{port}` stands for the port it must listen on.
    command: String,
}

fn parse_servers(specs: &[String]) -> Result<Vec<Server>, String> {
    let servers: Vec<Server> = specs
        .iter()
        .map(|s| match s.split_once('=') {
            Some((name, command)) if !name.is_empty() && command.contains("{port}") => Ok(Server {
                name: name.to_string(),
                command: command.to_string(),
            }),
            _ => Err(format!(
                "--server {s:?}: expected NAME=COMMAND, the command containing {{port}}"
            )),
        })
        .collect::<Result<_, _>>()?;
    if servers.len() < 2 {
        return Err("compare needs at least two --server".into());
    }
    Ok(servers)
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// The server's process, stopped (SIGINT, then SIGKILL after 10 s) on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How long a server may take to listen.
const START_WITHIN: Duration = Duration::from_secs(60);

fn start(server: &Server, port: u16) -> Result<Running, String> {
    let command = server.command.replace("{port}", &port.to_string());
    // `exec`, so the pid is the server's own (for its CPU and RSS).
    let child = Command::new("sh")
        .arg("-c")
        .arg(format!("exec {command}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: cannot start {command:?}: {e}", server.name))?;
    let running = Running(child);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    // soketi takes 5-15 s to listen here (Node start-up and its metrics set-up).
    let deadline = Instant::now() + START_WITHIN;
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if Instant::now() > deadline {
            return Err(format!(
                "{}: nothing listens on {addr} after {} s",
                server.name,
                START_WITHIN.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(running)
}

/// Runs this program with `args`; the JSON object it prints last.
fn run_self(args: &[String]) -> Result<Value, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let output = Command::new(exe)
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&output.stdout);
    let last = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or("");
    serde_json::from_str(last).map_err(|e| format!("no JSON result from {args:?}: {e}"))
}

fn pick(v: &Value, path: &str) -> Option<f64> {
    path.split('.').try_fold(v, |v, k| v.get(k))?.as_f64()
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    match xs.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => xs[n / 2],
        n => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}

pub(crate) fn run(a: &CompareArgs) -> i32 {
    match compare(a) {
        Ok(result) => {
            println!("{result}");
            0
        }
        Err(e) => {
            eprintln!("crier-bench: {e}");
            println!(
                "{}",
                json!({"scenario": "compare", "ok": false, "error": e})
            );
            1
        }
    }
}

fn compare(a: &CompareArgs) -> Result<Value, String> {
    let servers = parse_servers(&a.server)?;
    if a.scenario.is_empty() {
        return Err("give the scenario after --, e.g. -- fanout -s 10000".into());
    }
    let mut values: Vec<Vec<f64>> = vec![Vec::new(); servers.len()];
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); servers.len()];
    let mut floors = Vec::new();
    for round in 0..a.runs {
        let floor = run_self(&[
            "floor".into(),
            "--sockets".into(),
            a.floor_sockets.to_string(),
            "--writes".into(),
            a.floor_writes.to_string(),
        ])?;
        let floor_us = pick(&floor, "us_per_write").unwrap_or(f64::NAN);
        floors.push(floor_us);
        println!("round {}: floor {floor_us:.2} µs per write", round + 1);
        // A B in odd rounds, B A in even ones: neither always goes first.
        let mut order: Vec<usize> = (0..servers.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let server = &servers[i];
            let port = free_port()?;
            let running = start(server, port)?;
            let mut args = vec![
                "--url".to_string(),
                format!("ws://127.0.0.1:{port}"),
                "--server-pid".to_string(),
                running.0.id().to_string(),
            ];
            args.extend(a.scenario.iter().cloned());
            let result = run_self(&args)?;
            drop(running);
            let value = pick(&result, &a.metric).ok_or(format!(
                "{}: the result has no number at {:?}: {result}",
                server.name, a.metric
            ))?;
            println!(
                "  {:<12} {} = {value:.3} (ratio to floor {:.2}; background {}%)",
                server.name,
                a.metric,
                value / floor_us,
                result["background_busy_pct"]
            );
            values[i].push(value);
            ratios[i].push(value / floor_us);
        }
    }
    let medians: Vec<f64> = values.iter_mut().map(|v| median(&mut v.clone())).collect();
    let mut out = Vec::new();
    println!("{} over {} round(s), medians:", a.metric, a.runs);
    for (i, server) in servers.iter().enumerate() {
        let to_floor = median(&mut ratios[i].clone());
        let to_first = medians[i] / medians[0];
        println!(
            "  {:<12} {:.3}  ({:.2}× the floor, {:.2}× {})",
            server.name, medians[i], to_floor, to_first, servers[0].name
        );
        out.push(
            json!({"name": server.name, "values": values[i], "median": medians[i],
                        "ratio_to_floor": to_floor, "ratio_to_first": to_first}),
        );
    }
    Ok(
        json!({"scenario": "compare", "ok": true, "metric": a.metric, "floor_us": floors,
              "servers": out}),
    )
}
