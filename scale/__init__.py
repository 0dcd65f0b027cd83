"""Batch stages on a Ray cluster: the same records as the local engine, written as shards."""
