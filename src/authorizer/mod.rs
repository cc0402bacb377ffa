//! Auth endpoint helpers (work in progress).
