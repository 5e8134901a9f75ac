"""Serving: SavedModel export with in-graph preprocessing, and prediction on media files (clips, and timelines of long recordings)."""
