//! Where each uprobe sits in a function's machine code (filled in by the placement work).
