//! Rheon state: key groups and keyed state.
