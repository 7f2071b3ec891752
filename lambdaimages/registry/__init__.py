"""Registry access: the OCI distribution client (media types, auth, digest checks) and credentials."""
