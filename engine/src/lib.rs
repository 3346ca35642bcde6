//! Rheon engine.
