"""medmtl.data."""
