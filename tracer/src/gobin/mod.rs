//! A model of a Go binary: build info, functions, parameters and their ABI locations.

pub mod buildinfo;
pub mod pclntab;
