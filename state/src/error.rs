//! Typed errors of the state crate. Each variant carries the values a caller needs to
//! report the problem or act on it (the offending parallelism, the state's name); I/O and
//! corruption errors of snapshots will join here as separate variants.

use thiserror::Error;

use crate::key_group::MAX_PARALLELISM_BOUND;

/// An error from an operation of the state crate.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StateError {
    /// The max parallelism is 0 or above [`MAX_PARALLELISM_BOUND`].
    #[error(
        "max parallelism {max_parallelism} (with parallelism {parallelism}) is outside \
         1..={MAX_PARALLELISM_BOUND}"
    )]
    MaxParallelismOutOfBounds {
        /// The rejected max parallelism.
        max_parallelism: u32,
        /// The parallelism it was checked with.
        parallelism: u32,
    },
    /// The parallelism is 0 or above the max parallelism.
    #[error(
        "parallelism {parallelism} is outside 1..={max_parallelism} (1 up to the max parallelism)"
    )]
    ParallelismOutOfBounds {
        /// The rejected parallelism.
        parallelism: u32,
        /// The max parallelism it must not exceed.
        max_parallelism: u32,
    },
    /// A state of this name is already registered with other key or value types (or is
    /// another kind of state).
    #[error("state {name:?} is already registered with other key or value types")]
    TypeMismatch {
        /// The state's name.
        name: String,
    },
}
