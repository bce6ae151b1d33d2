"""Python's side of the data plane boundary (issue 17; docs/dataplane.md).

The Rust extension `ferry._dataplane` (the `rust/` crate) owns the REST socket: it
accepts, parses HTTP/1.1 (keep-alive, pipelining) and enforces the transport limits on
threads of its own. Every request is handed here with its raw bytes and runs through
ferry's ASGI app, so the Python handlers stay the one reference for wire behaviour.

The boundary is this package: `flags` (the `--dataplane` choice), `front` (the bridge
from `ferry._dataplane.HttpFront` to the ASGI app). Nothing else imports the extension.
"""
