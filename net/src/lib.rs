//! Rheon data plane.
