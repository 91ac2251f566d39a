"""Export a stage folder to other runtimes' formats (``minigpt export``)."""
