//! Broadcasting from a background job through a Crier (or Pusher) server elsewhere: a job
//! runs, and when it is done the user who asked for it hears so on every tab they have open
//! (`send_to_user`, which reaches a pusher-js client after `signin()`), and on their private
//! channel (`private-user.{id}`, for apps that listen there with Echo).
//!
//! ```sh
//! PUSHER_URL=http://app-key:app-secret@127.0.0.1:6001/apps/1 USER_ID=42 JOBS=3 \
//!     cargo run --release --example notify_from_job
//! ```

use std::time::Duration;

use crier::broadcast::{BroadcastEvent, Broadcaster, Channel};
use crier::client::Client;
use serde::Serialize;
use serde_json::json;

/// What a finished job tells its user, as an event type that says where it goes.
#[derive(Serialize)]
struct ReportReady {
    job: u32,
    url: String,
    #[serde(skip)]
    user_id: String,
}

impl BroadcastEvent for ReportReady {
    fn broadcast_on(&self) -> Vec<Channel> {
        vec![Channel::Private(format!("user.{}", self.user_id))]
    }

    fn broadcast_as(&self) -> String {
        "report.ready".into()
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("PUSHER_URL")
        .unwrap_or_else(|_| "http://app-key:app-secret@127.0.0.1:6001/apps/1".to_string());
    let user_id = std::env::var("USER_ID").unwrap_or_else(|_| "42".to_string());
    let jobs: u32 = std::env::var("JOBS")
        .ok()
        .and_then(|j| j.parse().ok())
        .unwrap_or(3);
    let broadcaster = Broadcaster::remote(Client::from_url(&url)?);

    // A queue of jobs, worked by a background task; the web request that queued them has long
    // answered.
    let (queue, mut work) = tokio::sync::mpsc::channel::<u32>(16);
    let worker = {
        let broadcaster = broadcaster.clone();
        let user_id = user_id.clone();
        tokio::spawn(async move {
            while let Some(job) = work.recv().await {
                tokio::time::sleep(Duration::from_millis(50)).await; // the work itself
                broadcaster
                    .send_to_user(&user_id, "JobFinished", &json!({ "job": job }))
                    .await?;
                broadcaster
                    .broadcast(&ReportReady {
                        job,
                        url: format!("/reports/{job}.pdf"),
                        user_id: user_id.clone(),
                    })
                    .await?;
                println!("job {job} done; user {user_id} notified");
            }
            Ok::<(), crier::broadcast::BroadcastError>(())
        })
    };
    for job in 1..=jobs {
        queue.send(job).await?;
    }
    drop(queue);
    worker.await??;
    Ok(())
}
