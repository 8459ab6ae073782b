"""The ``callrec`` command line: local development stack, tokens, operator views."""
