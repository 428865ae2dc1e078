//! Integration tests of netmon run.
