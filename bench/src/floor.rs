//! The floor of a fan-out: CPU cost of one plain write() of a small message to a loopback TCP
//! socket whose reader (another thread, epoll-driven like a real client) drains it.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

use serde_json::{Value, json};

use crate::sys::{cpu_delta, snap, thread_cpu_ns};

pub(crate) struct FloorResult {
    pub(crate) us_per_write_thread: f64,
    /// Writer + reader threads (both ends of the socket), from /proc/self/stat.
    pub(crate) process_us_per_write: f64,
    pub(crate) machine_us_per_write: f64,
    pub(crate) wall_us_per_write: f64,
    pub(crate) writes: u64,
    pub(crate) sockets: usize,
    pub(crate) size: usize,
}

impl FloorResult {
    pub(crate) fn to_json(&self) -> Value {
        json!({"us_per_write": round3(self.us_per_write_thread), "process_us_per_write": round3(self.process_us_per_write),
               "machine_us_per_write": round3(self.machine_us_per_write),
               "wall_us_per_write": round3(self.wall_us_per_write), "writes": self.writes,
               "sockets": self.sockets, "size": self.size})
    }
}

pub(crate) fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

pub(crate) fn measure(
    sockets: usize,
    writes: u64,
    size: usize,
    nodelay: bool,
) -> std::io::Result<FloorResult> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let mut writers = Vec::new();
    let mut readers = Vec::new();
    for _ in 0..sockets {
        let w = TcpStream::connect(addr)?;
        w.set_nodelay(nodelay)?;
        let (r, _) = listener.accept()?;
        r.set_nonblocking(true)?;
        writers.push(w);
        readers.push(r);
    }
    // Reader: one current-thread tokio runtime draining every socket, as a client would.
    let reader = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut tasks = Vec::new();
            for r in readers {
                tasks.push(tokio::spawn(async move {
                    let s = tokio::net::TcpStream::from_std(r).unwrap();
                    let mut buf = vec![0u8; 64 * 1024];
                    let mut total = 0u64;
                    loop {
                        if s.readable().await.is_err() {
                            break;
                        }
                        match s.try_read(&mut buf) {
                            Ok(0) => break,
                            Ok(n) => total += n as u64,
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                            Err(_) => break,
                        }
                    }
                    total
                }));
            }
            let mut t = 0;
            for h in tasks {
                t += h.await.unwrap_or(0);
            }
            t
        })
    });
    // A WebSocket text frame header (2 bytes) + JSON-ish payload of `size` bytes in total.
    let mut msg = vec![b'x'; size.max(2)];
    msg[0] = 0x81;
    msg[1] = (size.saturating_sub(2)).min(125) as u8;
    // warm-up
    for i in 0..(writes / 20).max(100) {
        writers[i as usize % sockets].write_all(&msg)?;
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    let s0 = snap(&["self"]);
    let c0 = thread_cpu_ns();
    let t0 = Instant::now();
    for i in 0..writes {
        writers[i as usize % sockets].write_all(&msg)?;
    }
    let wall = t0.elapsed();
    let c1 = thread_cpu_ns();
    let s1 = snap(&["self"]);
    drop(writers);
    let _ = reader.join();
    let (_, _, machine) = cpu_delta(&s0, &s1);
    let w = writes as f64;
    Ok(FloorResult {
        us_per_write_thread: (c1 - c0) as f64 / 1000.0 / w,
        process_us_per_write: (s1.ticks - s0.ticks) as f64 * 10_000.0 / w,
        machine_us_per_write: machine * 1e6 / w,
        wall_us_per_write: wall.as_secs_f64() * 1e6 / w,
        writes,
        sockets,
        size,
    })
}

/// The `floor` scenario.
pub(crate) fn run(a: &crate::FloorArgs, out: &mut crate::scenarios::Out) -> Result<(), String> {
    out.line(format!(
        "floor: {} writes of {} bytes round-robin over {} loopback TCP socket(s) (TCP_NODELAY {}), reader draining in another thread",
        a.writes,
        a.size,
        a.sockets,
        if a.nagle { "off" } else { "on" }
    ));
    if a.sockets > 9_500 {
        return Err(
            "--sockets: at most 9,500 (both ends of each socket live in this process)".into(),
        );
    }
    let r = measure(a.sockets.max(1), a.writes.max(1000), a.size, !a.nagle)
        .map_err(|e| e.to_string())?;
    out.line(format!(
        "writer thread CPU: {:.2} µs per write (schedstat); writer+reader process {:.2} µs; whole machine {:.2} µs; wall {:.2} µs",
        r.us_per_write_thread, r.process_us_per_write, r.machine_us_per_write, r.wall_us_per_write
    ));
    if let Value::Object(m) = r.to_json() {
        for (k, v) in m {
            out.set(&k, v);
        }
    }
    Ok(())
}
