"""CLI subcommand groups, one module per pipeline stage; ``hsrl.cli`` assembles them."""
