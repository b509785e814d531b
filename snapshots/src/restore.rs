//! Placeholder: restore (being written).
