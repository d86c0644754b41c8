"""Built-in bots that need no outside service: for the embedded default and tests."""
