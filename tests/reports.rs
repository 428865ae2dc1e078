//! Integration tests of the report commands (written by the reports work).
