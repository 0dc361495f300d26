//! fw-ctl
