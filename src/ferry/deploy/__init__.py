"""Getting models to where they serve: packaging, object storage, endpoint targets."""
