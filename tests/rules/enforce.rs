//! Hooked-in rules against real connections (to come).
