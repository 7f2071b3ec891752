"""Upstream to disk, in pipeline order: resolve (tag -> state), export (layers -> tarballs), render (Dockerfiles)."""
