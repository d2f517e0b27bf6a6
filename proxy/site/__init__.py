"""What every output reads: one gateway as a Site, its frame per window, the measurement
table, the hub. Never renders."""
