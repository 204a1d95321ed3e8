"""Numbered SQL migrations of the local inbox, applied in order (package data)."""
