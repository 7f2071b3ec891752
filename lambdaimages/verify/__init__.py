"""Proof that a built image is upstream's: the checks, the Runtime API they invoke through, the reports."""
