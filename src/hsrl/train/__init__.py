"""train stage of hsrl."""
