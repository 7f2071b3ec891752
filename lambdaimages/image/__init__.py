"""Images from a snapshot: loaded from upstream's config and layers, pushed to a registry."""
