"""serve stage of hsrl."""
