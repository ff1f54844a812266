"""Bucket batches (issue 27): anonymize the pictures under a source location into a
target location, on every worker, never touching the sources (they are borrowed)."""
