"""wrencore's local backend: long-lived worker processes on this computer."""
