//! Publishing bench events through the signed HTTP API from a few keep-alive connections.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use crate::hist::Hist;
use crate::http::{Api, HttpConn};
use crate::sys::now_ns;

pub(crate) const EVENT_NAME: &str = "bench-event";

#[derive(Clone, Debug)]
pub(crate) struct PubCfg {
    /// Channel names; event k goes to channels[k % len] with sequence number k / len.
    pub(crate) channels: Vec<String>,
    pub(crate) events: u64,
    /// Spacing between events; 0 = as fast as the server accepts.
    pub(crate) interval: Duration,
    pub(crate) max_duration: Duration,
    pub(crate) http_conns: usize,
    pub(crate) data_bytes: usize,
}

#[derive(Debug, Default)]
pub(crate) struct PubResult {
    pub(crate) published: Vec<u64>,
    pub(crate) ok: u64,
    pub(crate) failed: u64,
    pub(crate) statuses: BTreeMap<String, u64>,
    pub(crate) req_hist: Hist,
    pub(crate) t_first_send: u64,
    pub(crate) t_last_send: u64,
    pub(crate) t_end: u64,
    pub(crate) reconnects: u64,
    /// Accepted publishes per API endpoint (node), in the order given.
    pub(crate) per_node: Vec<u64>,
}

pub(crate) fn event_body(channel: &str, seq: u64, t_ns: u64, pad: usize) -> Vec<u8> {
    let mut data = format!("cb|{seq}|{t_ns}|");
    let target = pad.max(data.len());
    while data.len() < target {
        data.push('x');
    }
    format!(r#"{{"name":"{EVENT_NAME}","channels":["{channel}"],"data":"{data}"}}"#).into_bytes()
}

/// Publishes through `apis` (one or more nodes): the m-th event of channel c goes to node
/// (c + m) % nodes, so every node publishes to every channel and the nodes get equal shares.
/// Each publishing task keeps one keep-alive connection per node.
pub(crate) async fn publish(apis: &[Api], cfg: &PubCfg) -> PubResult {
    let nch = cfg.channels.len().max(1);
    let nodes = apis.len().max(1);
    let res = Rc::new(RefCell::new(PubResult {
        published: vec![0; nch],
        per_node: vec![0; nodes],
        req_hist: Hist::new(),
        ..Default::default()
    }));
    let next = Rc::new(Cell::new(0u64));
    let start = tokio::time::Instant::now();
    let deadline = start + cfg.max_duration;
    let mut handles = Vec::new();
    for _ in 0..cfg.http_conns.max(1) {
        let (apis, cfg, res, next) = (apis.to_vec(), cfg.clone(), res.clone(), next.clone());
        handles.push(tokio::task::spawn_local(async move {
            let mut conns: Vec<HttpConn> = apis.iter().map(|a| HttpConn::new(a.addr)).collect();
            loop {
                let k = next.get();
                if k >= cfg.events {
                    break;
                }
                next.set(k + 1);
                if !cfg.interval.is_zero() {
                    let due = start + cfg.interval.mul_f64(k as f64);
                    if due > deadline {
                        break;
                    }
                    tokio::time::sleep_until(due).await;
                } else if tokio::time::Instant::now() >= deadline {
                    break;
                }
                let ch = k as usize % nch;
                let m = k / nch as u64;
                let node = (ch + m as usize) % nodes;
                let t = now_ns();
                let body = event_body(&cfg.channels[ch], m, t, cfg.data_bytes);
                let req = apis[node].events_request(&body);
                let r = conns[node].roundtrip(&req).await;
                let t2 = now_ns();
                let backoff = {
                    let mut res = res.borrow_mut();
                    if res.t_first_send == 0 {
                        res.t_first_send = t;
                    }
                    res.t_last_send = res.t_last_send.max(t);
                    res.req_hist.record((t2 - t) / 1000);
                    match r {
                        Ok((s, _)) if (200..300).contains(&s) => {
                            res.ok += 1;
                            res.published[ch] += 1;
                            res.per_node[node] += 1;
                            false
                        }
                        Ok((s, b)) => {
                            res.failed += 1;
                            let msg = String::from_utf8_lossy(&b)
                                .chars()
                                .take(120)
                                .collect::<String>();
                            *res.statuses.entry(format!("HTTP {s}: {msg}")).or_insert(0) += 1;
                            false
                        }
                        Err(e) => {
                            res.failed += 1;
                            *res.statuses.entry(format!("io: {}", e.kind())).or_insert(0) += 1;
                            true
                        }
                    }
                };
                if backoff {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            conns.iter().map(|c| c.reconnects).sum::<u64>()
        }));
    }
    let mut reconnects = 0;
    for h in handles {
        reconnects += h.await.unwrap_or(0);
    }
    let mut r = Rc::try_unwrap(res)
        .map(|c| c.into_inner())
        .unwrap_or_default();
    r.t_end = now_ns();
    r.reconnects = reconnects;
    r
}
