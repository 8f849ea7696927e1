"""The ``atomlab`` command line: parses input, calls the library, prints output."""
