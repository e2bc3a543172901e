"""The command line: one module per command, each registering itself in COMMANDS."""
