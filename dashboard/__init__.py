"""The ops dashboard."""
