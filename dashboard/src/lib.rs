//! dashboard (to be written).
