"""Study module (being written)."""
