//! Statements of `control::kinds`.
