//! ferry's data plane, built by maturin into the Python module `ferry._dataplane`.
//!
//! Rust owns the sockets: an HTTP/1.1 front (tokio, hyper) with ferry's transport limits.
//! Every request is handed to ferry's Python handlers (`ferry.dataplane`) with its raw
//! bytes through a queue that the Python event loop drains, so no Rust thread waits for
//! the GIL; Python answers through `Request.respond`. The Python handlers stay the one
//! reference for wire behaviour: Rust writes no error text of its own (the transport
//! refusals come from Python's table, `ferry.protocols.http_limits`).

mod codec;
mod front;
mod handoff;
mod http;
mod limits;

use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// The float-rows decoder on its own (what the front runs on a `:predict` body), for the
/// equivalence tests against `ferry.codecs.float_rows.parse_float_rows`.
#[pyfunction]
fn parse_float_rows<'py>(
    py: Python<'py>,
    body: &Bound<'py, PyBytes>,
) -> Option<handoff::PyFloatRows<'py>> {
    codec::float_rows::parse_float_rows(body.as_bytes())
        .map(|rows| handoff::float_rows_to_python(py, &rows))
}

#[pymodule]
fn _dataplane(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<front::HttpFront>()?;
    module.add_class::<handoff::Request>()?;
    module.add_function(wrap_pyfunction!(parse_float_rows, module)?)?;
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
