"""Snapshots to git: one reproducible commit per runtime branch, and what changed between two snapshots."""
