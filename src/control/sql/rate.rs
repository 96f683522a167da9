//! Statements of `control::rate`.
