//! The data plane: a RESP proxy that routes every command by the phase in the flag file.
pub mod resp;
pub mod backend;
pub mod node;
pub mod keyconn;
pub mod mirror;
