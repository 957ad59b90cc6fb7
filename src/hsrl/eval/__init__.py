"""eval stage of hsrl."""
