//! Placeholder: time parsing (being written).
