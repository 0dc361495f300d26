//! detector (to be written).
