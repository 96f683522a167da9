//! Per-kind start rates (`kinds.<k>.rate_limit`).
