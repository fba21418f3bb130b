//! The flag file: the contract between the CLI and the data plane.
