"""agents stage of hsrl."""
