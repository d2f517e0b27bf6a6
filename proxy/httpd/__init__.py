"""The HTTP transport: knows HTTP, not Powerwalls."""
