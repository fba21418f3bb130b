//! The data plane: a RESP proxy that routes every command by the phase in the flag file.

pub mod command;
