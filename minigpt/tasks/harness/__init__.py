"""lm-evaluation-harness (the optional ``eval`` extra) on a model folder (docs/report.md)."""
