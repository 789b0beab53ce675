//! The Go build info (`.go.buildinfo`): Go version and main module.
