"""Re-create the AWS Lambda base container images from their published registry images."""
