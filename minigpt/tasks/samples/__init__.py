"""Fixed prompts answered by every stage, shown side by side in the report (docs/report.md)."""
