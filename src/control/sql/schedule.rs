//! Statements of `control::schedule`.
