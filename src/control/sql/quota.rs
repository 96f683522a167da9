//! Statements of `control::quota`.
