"""The test bed, never imported by the product: local registry, sample images, the demo, the benchmark."""
