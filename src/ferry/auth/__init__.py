"""Access control for `ferry serve --auth FILE`: the key file (`keys`), SigV4
verification (`sigv4`), the HTTP and gRPC layers that apply them (`middleware`) and
the `ferry keys` command (`cli`)."""
