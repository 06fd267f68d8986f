"""Reading letters: the MIME parser, addresses, and the cheap byte scanners a pass runs over every header.

The bottom floor beside models, errors and config: pure functions over bytes, no I/O."""
