"""GSM8K-style evaluation: exact match of the final number of a greedy answer (docs/report.md)."""
