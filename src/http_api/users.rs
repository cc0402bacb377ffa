//! `POST /users/{user_id}/terminate_connections`: closes every connection signed in as the
//! user with 4009, so pusher-js does not reconnect it on its own.

use super::auth::VerifiedRequest;
use crate::channels::users::termination;

pub fn terminate(req: &VerifiedRequest, user_id: &str) -> String {
    req.app.users.terminate(user_id, &termination());
    if let Some(cluster) = &req.app.cluster {
        cluster.terminate(user_id);
    }
    "{}".to_string()
}
