//! `POST /users/{user_id}/terminate_connections`: closes every connection signed in as the
//! user with 4009, so pusher-js does not reconnect it on its own.

use super::auth::VerifiedRequest;
use crate::apps::App;
use crate::channels::users::termination;

pub(crate) fn terminate(req: &VerifiedRequest, user_id: &str) -> String {
    terminate_user(&req.app, user_id);
    "{}".to_string()
}

/// Closes every connection signed in as `user_id`, on this node and (through Redis) on the
/// others.
pub(crate) fn terminate_user(app: &App, user_id: &str) {
    app.users.terminate(user_id, &termination());
    if let Some(cluster) = &app.cluster {
        cluster.terminate(user_id);
    }
}
