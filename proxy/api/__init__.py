"""The HTTP surface: one module per route group."""
