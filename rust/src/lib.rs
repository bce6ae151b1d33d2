//! ferry's data plane, built by maturin into the Python module `ferry._dataplane`.
//!
//! Rust owns the sockets: an HTTP/1.1 front (tokio, hyper) with ferry's transport limits.
//! Every request is handed to ferry's Python handlers (`ferry.dataplane`) with its raw
//! bytes through a queue that the Python event loop drains, so no Rust thread waits for
//! the GIL; Python answers through `Request.respond`. The Python handlers stay the one
//! reference for wire behaviour: Rust writes no error text of its own (the transport
//! refusals come from Python's table, `ferry.protocols.http_limits`).

mod activity;
pub mod auth;
pub mod codec;
mod front;
mod handoff;
pub mod head_scan;
mod head_watch;
mod http;
mod idle;
pub mod limits;
mod tls;

use std::collections::HashMap;

use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// The float-rows decoder on its own (what the front runs on a `:predict` body), for the
/// equivalence tests against `ferry.codecs.float_rows.parse_float_rows`.
#[pyfunction]
fn parse_float_rows<'py>(
    py: Python<'py>,
    body: &Bound<'py, PyBytes>,
) -> PyResult<Option<handoff::PyFloatRows<'py>>> {
    codec::float_rows::parse_float_rows(body.as_bytes())
        .map(|rows| handoff::float_rows_to_python(py, &rows))
        .transpose()
}

/// The V2 infer decoder on its own (what the front runs on a `/v2/models/.../infer`
/// body), for the equivalence tests against `ferry.codecs.v2.decode_rest_request`.
#[pyfunction]
fn parse_v2_inputs<'py>(
    py: Python<'py>,
    body: &Bound<'py, PyBytes>,
) -> PyResult<Option<handoff::PyV2Inputs<'py>>> {
    codec::v2_inputs::parse_v2_inputs(body.as_bytes())
        .map(|inputs| handoff::v2_inputs_to_python(py, &inputs))
        .transpose()
}

/// The front's credential check on its own (what it runs on every request under
/// `--auth`), for the equivalence tests against `ferry.auth.sigv4.verify`: the key id it
/// accepts the request for, or None (Python then judges it). `headers` as ASGI has them.
#[pyfunction]
#[pyo3(signature = (secrets, token_ids, max_skew_seconds, method, path, query, headers, body))]
#[allow(clippy::too_many_arguments)]
fn verify_credentials(
    secrets: HashMap<String, String>,
    token_ids: HashMap<String, String>,
    max_skew_seconds: f64,
    method: &str,
    path: &[u8],
    query: &[u8],
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    body: &[u8],
) -> PyResult<Option<String>> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let name =
            HeaderName::from_bytes(&name).map_err(|e| PyValueError::new_err(e.to_string()))?;
        let value =
            HeaderValue::from_bytes(&value).map_err(|e| PyValueError::new_err(e.to_string()))?;
        map.append(name, value);
    }
    let keys = auth::Keys::default();
    keys.publish(auth::KeyTable::new(1, secrets, token_ids, max_skew_seconds));
    Ok(keys
        .verify(method, path, query, &map, body)
        .map(|verified| verified.key_id))
}

#[pymodule]
fn _dataplane(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<front::HttpFront>()?;
    module.add_class::<handoff::Request>()?;
    module.add_function(wrap_pyfunction!(parse_float_rows, module)?)?;
    module.add_function(wrap_pyfunction!(verify_credentials, module)?)?;
    module.add_function(wrap_pyfunction!(parse_v2_inputs, module)?)?;
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
