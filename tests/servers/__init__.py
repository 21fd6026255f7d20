"""Real servers on loopback for the test suite (see ../shared/TESTING.md)."""
