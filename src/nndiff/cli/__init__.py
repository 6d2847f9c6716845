"""The `nndiff` command: its options and what each command prints."""
