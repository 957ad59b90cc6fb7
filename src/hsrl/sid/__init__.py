"""sid stage of hsrl."""
