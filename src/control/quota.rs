//! Per-user admission quotas, enforced at insert by the database.
