"""CIC health: node verdicts and the replica table."""
