//! Known kinds and the replicas that serve them.
