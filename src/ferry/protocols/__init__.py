"""Wire protocols: each module translates between one wire format and ferry's request path."""
