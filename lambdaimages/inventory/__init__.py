"""Package inventories of images: layer facts, rpm/dpkg/language package readers, merge, CycloneDX SBOM."""
