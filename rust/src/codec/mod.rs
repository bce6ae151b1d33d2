//! Wire formats decoded on the front's threads, without the GIL. Each decoder takes only
//! the exact shapes it is written for and answers `None` for anything else, which then
//! goes to Python's decoder unchanged: Python stays the reference for every other body
//! and for every error.

pub mod float_rows;
mod json;
pub mod v2_inputs;
