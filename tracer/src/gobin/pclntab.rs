//! The Go function table (`.gopclntab`).
