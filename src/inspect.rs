//! Online inspection of source and target.
